//! Device logic, verb by verb, without I/O.

use crate::common::*;
use imprint_devsim::{Delivery, Device, SimConfig};
use imprint_proto::codec::{b64, unb64, Decoded, Decoder, Direction, ErrorCode, Frame};
use imprint_proto::session::pop_message;
use imprint_proto::DeviceState;
use sha2::{Digest, Sha256};

const SERIAL: &str = "SIM-0001";

struct T {
    dev: Device,
    rid: u16,
}

impl T {
    fn new() -> Self {
        T::with(SimConfig::new(SERIAL))
    }
    fn faults(spec: &str) -> Self {
        T::with(SimConfig::new(SERIAL).with_faults(spec).unwrap())
    }
    fn with(cfg: SimConfig) -> Self {
        T { dev: Device::new(&cfg), rid: 0 }
    }
    fn send(&mut self, verb: &str, fields: &[(&str, &str)]) -> imprint_devsim::Reply {
        self.rid += 1;
        let r = self.dev.handle(&req(self.rid, verb, fields));
        if let Some(f) = &r.frame {
            assert_eq!(f.rid, self.rid, "answer echoes the request id");
        }
        r
    }
    fn ok(&mut self, verb: &str, fields: &[(&str, &str)]) -> Frame {
        let r = self.send(verb, fields);
        let f = r.frame.expect("an answer");
        assert!(f.is_ok(), "{verb} {fields:?}: {f}");
        f
    }
    fn err(&mut self, verb: &str, fields: &[(&str, &str)]) -> ErrorCode {
        let r = self.send(verb, fields);
        let f = r.frame.expect("an answer");
        assert_eq!(f.head, "ERR", "{verb} {fields:?}: {f}");
        assert!(f.field("name").is_some());
        f.error_code().expect("a code")
    }
    fn keygen(&mut self) -> Vec<u8> {
        let f = self.ok("KEYGEN", &[("alg", "p256")]);
        unb64(f.field("pub").unwrap()).unwrap()
    }
    fn csr(&mut self, nonce: &[u8]) -> Vec<u8> {
        let f = self.ok("CSR", &[("nonce", &b64(nonce))]);
        let len: usize = f.field("len").unwrap().parse().unwrap();
        let sha = unb64(f.field("sha256").unwrap()).unwrap();
        let der = self.read_all("csr");
        assert_eq!(der.len(), len);
        assert_eq!(Sha256::digest(&der).as_slice(), sha.as_slice());
        der
    }
    fn read_all(&mut self, obj: &str) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let off = out.len().to_string();
            let f = self.ok("READ", &[("obj", obj), ("off", &off), ("max", "100")]);
            assert_eq!(f.field("obj"), Some(obj));
            assert_eq!(f.field("off"), Some(off.as_str()));
            let total: usize = f.field("total").unwrap().parse().unwrap();
            let data = unb64(f.field("data").unwrap()).unwrap();
            assert!(data.len() <= 100);
            out.extend(data);
            if out.len() >= total {
                return out;
            }
        }
    }
    fn put_all(&mut self, obj: &str, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(300).enumerate() {
            let off = i * 300;
            let f = self.ok("PUT", &[("obj", obj), ("off", &off.to_string()), ("data", &b64(chunk))]);
            assert_eq!(f.field("next"), Some((off + chunk.len()).to_string().as_str()));
        }
    }
    fn commit_fields(bytes: &[u8]) -> (String, String) {
        (bytes.len().to_string(), b64(&Sha256::digest(bytes)))
    }
    fn commit(&mut self, obj: &str, bytes: &[u8]) -> Result<Frame, ErrorCode> {
        let (len, sha) = Self::commit_fields(bytes);
        let f = self.send("COMMIT", &[("obj", obj), ("len", &len), ("sha256", &sha)]).frame.unwrap();
        if f.is_ok() {
            Ok(f)
        } else {
            Err(f.error_code().unwrap())
        }
    }
    fn provision(&mut self, ca: &TestCa) -> (Vec<u8>, Vec<u8>) {
        let spki = self.keygen();
        let (cert, chain) = ca.issue(SERIAL, &spki);
        self.put_all("cert", &cert);
        self.commit("cert", &cert).unwrap();
        self.put_all("chain", &chain);
        self.commit("chain", &chain).unwrap();
        (cert, chain)
    }
    fn state(&mut self) -> String {
        self.ok("IDENT", &[]).field("state").unwrap().to_string()
    }
}

fn nonce(n: usize) -> Vec<u8> {
    (0..n as u8).map(|i| i.wrapping_mul(37).wrapping_add(5)).collect()
}

#[test]
fn hello_negotiates_version_one() {
    let mut t = T::new();
    let f = t.ok("HELLO", &[("proto", "1")]);
    let line = String::from_utf8(f.encode()).unwrap();
    assert!(
        line.starts_with("@< 1 OK proto=1 maxline=1024 chunk=512 caps=HELLO,IDENT,KEYGEN,CSR,READ,PUT,COMMIT,PROVE,LOCK,RESET,CONNECT *"),
        "{line}"
    );
    assert_eq!(t.err("HELLO", &[("proto", "2")]), ErrorCode::UnsupportedVersion);
    assert_eq!(t.err("HELLO", &[]), ErrorCode::BadRequest);
}

#[test]
fn ident_reports_identity_and_state() {
    let mut t = T::new();
    let f = t.ok("IDENT", &[]);
    assert_eq!(f.text("serial").as_deref(), Some(SERIAL));
    assert_eq!(f.text("model").as_deref(), Some("imprint-sim"));
    assert_eq!(f.text("hw").as_deref(), Some("A1"));
    assert_eq!(f.text("fw").as_deref(), Some("1.4.2"));
    let fwhash = f.field("fwhash").unwrap();
    assert_eq!(fwhash.len(), 64);
    assert!(fwhash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(f.field("uid").unwrap().len(), 16);
    let names: Vec<&str> = f.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["serial", "model", "hw", "fw", "fwhash", "uid", "state"]);
    assert_eq!(t.state(), "blank");
    t.keygen();
    assert_eq!(t.state(), "keyed");
}

#[test]
fn unknown_verb_and_bad_fields() {
    let mut t = T::new();
    assert_eq!(t.err("CONNECT", &[]), ErrorCode::BadRequest, "CONNECT is implemented: its fields are missing");
    assert_eq!(t.err("FROB", &[]), ErrorCode::UnknownVerb);
    assert_eq!(t.err("KEYGEN", &[]), ErrorCode::BadRequest);
    assert_eq!(t.err("KEYGEN", &[("alg", "ed25519")]), ErrorCode::BadRequest);
    assert_eq!(t.err("KEYGEN", &[("alg", "p256"), ("force", "yes")]), ErrorCode::BadRequest);
    assert_eq!(t.err("READ", &[("obj", "csr"), ("off", "-1"), ("max", "1")]), ErrorCode::BadRequest);
    assert_eq!(t.err("READ", &[("obj", "key"), ("off", "0"), ("max", "1")]), ErrorCode::BadRequest);
    assert_eq!(t.err("PUT", &[("obj", "cert"), ("off", "0"), ("data", "!!")]), ErrorCode::BadRequest);
    assert_eq!(t.err("LOCK", &[("phase", "now")]), ErrorCode::BadRequest);
}

#[test]
fn keygen_is_idempotent_and_force_regenerates() {
    let mut t = T::with(SimConfig { keygen_ms: 700, ..SimConfig::new(SERIAL) });
    let r = t.send("KEYGEN", &[("alg", "p256")]);
    assert_eq!(r.busy_ms, 700, "a new key takes keygen_ms");
    let f = r.frame.unwrap();
    assert_eq!((f.field("alg"), f.field("new")), (Some("p256"), Some("1")));
    let spki = unb64(f.field("pub").unwrap()).unwrap();
    let (_, parsed) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&spki).unwrap();
    assert_eq!(parsed.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");

    let r = t.send("KEYGEN", &[("alg", "p256")]);
    assert_eq!(r.busy_ms, 0);
    let again = r.frame.unwrap();
    assert_eq!(again.field("new"), Some("0"));
    assert_eq!(again.field("pub"), f.field("pub"));
    // A different alg without force still returns the existing key, labelled.
    let other = t.ok("KEYGEN", &[("alg", "p384")]);
    assert_eq!((other.field("alg"), other.field("new"), other.field("pub")), (Some("p256"), Some("0"), f.field("pub")));

    t.csr(&nonce(16));
    let forced = t.ok("KEYGEN", &[("alg", "p384"), ("force", "1")]);
    assert_eq!((forced.field("alg"), forced.field("new")), (Some("p384"), Some("1")));
    assert_ne!(forced.field("pub"), f.field("pub"));
    assert_eq!(t.err("READ", &[("obj", "csr"), ("off", "0"), ("max", "10")]), ErrorCode::NotFound, "force clears objects");
}

#[test]
fn csr_is_real_nonce_bound_and_signed_by_the_device_key() {
    for (alg, sig_oid) in [("p256", "1.2.840.10045.4.3.2"), ("p384", "1.2.840.10045.4.3.3")] {
        let mut t = T::with(SimConfig { csr_ms: 250, ..SimConfig::new(SERIAL) });
        assert_eq!(t.err("CSR", &[("nonce", &b64(&nonce(16)))]), ErrorCode::BadState, "no key");
        let f = t.ok("KEYGEN", &[("alg", alg)]);
        let spki = unb64(f.field("pub").unwrap()).unwrap();
        assert_eq!(t.err("CSR", &[("nonce", &b64(&nonce(15)))]), ErrorCode::BadRequest);
        assert_eq!(t.err("CSR", &[("nonce", &b64(&nonce(65)))]), ErrorCode::BadRequest);
        assert_eq!(t.err("CSR", &[]), ErrorCode::BadRequest);
        for n in [16, 32, 64] {
            let nonce = nonce(n);
            assert_eq!(t.send("CSR", &[("nonce", &b64(&nonce))]).busy_ms, 250);
            let der = t.csr(&nonce);
            let c = CsrFacts::parse(&der).unwrap();
            assert!(c.signature_ok, "CSR signature verifies");
            assert_eq!(c.sig_alg, sig_oid);
            assert_eq!(c.cn.as_deref(), Some(SERIAL));
            assert_eq!(c.serial_number.as_deref(), Some(SERIAL));
            assert_eq!(c.challenge, Some(hex::encode(&nonce)));
            assert_eq!(c.spki, spki, "CSR carries the KEYGEN key");
            // rcgen (what a station signs with) accepts it too.
            rcgen::CertificateSigningRequestParams::from_der(&der.clone().into()).unwrap();
        }
    }
}

#[test]
fn read_bounds_and_errors() {
    let mut t = T::new();
    assert_eq!(t.err("READ", &[("obj", "cert"), ("off", "0"), ("max", "512")]), ErrorCode::NotFound);
    t.keygen();
    t.csr(&nonce(32));
    let total: usize = t.ok("READ", &[("obj", "csr"), ("off", "0"), ("max", "1")]).field("total").unwrap().parse().unwrap();
    let f = t.ok("READ", &[("obj", "csr"), ("off", "0"), ("max", "100000")]);
    assert_eq!(unb64(f.field("data").unwrap()).unwrap().len(), total.min(512), "at most 512 bytes per READ");
    let end = t.ok("READ", &[("obj", "csr"), ("off", &total.to_string()), ("max", "512")]);
    assert_eq!(end.field("data"), Some(""));
    assert_eq!(t.err("READ", &[("obj", "csr"), ("off", &(total + 1).to_string()), ("max", "512")]), ErrorCode::BadOffset);
}

#[test]
fn put_stages_idempotently() {
    let mut t = T::new();
    t.keygen();
    assert_eq!(t.err("PUT", &[("obj", "csr"), ("off", "0"), ("data", "AAAA")]), ErrorCode::BadRequest);
    assert_eq!(t.err("PUT", &[("obj", "cert"), ("off", "1"), ("data", "AAAA")]), ErrorCode::BadOffset);
    let a = b64(&[1u8; 100]);
    assert_eq!(t.ok("PUT", &[("obj", "cert"), ("off", "0"), ("data", &a)]).field("next"), Some("100"));
    // A retried PUT (its answer was lost) gives the same result.
    assert_eq!(t.ok("PUT", &[("obj", "cert"), ("off", "0"), ("data", &a)]).field("next"), Some("100"));
    assert_eq!(t.ok("PUT", &[("obj", "cert"), ("off", "100"), ("data", &a)]).field("next"), Some("200"));
    assert_eq!(t.ok("PUT", &[("obj", "cert"), ("off", "100"), ("data", &a)]).field("next"), Some("200"));
    assert_eq!(t.err("PUT", &[("obj", "cert"), ("off", "201"), ("data", &a)]), ErrorCode::BadOffset);
    // Rewriting from an earlier offset truncates.
    assert_eq!(t.ok("PUT", &[("obj", "cert"), ("off", "50"), ("data", "")]).field("next"), Some("50"));
    // The chain slot is separate.
    assert_eq!(t.ok("PUT", &[("obj", "chain"), ("off", "0"), ("data", &a)]).field("next"), Some("100"));
    // Size limit: 8192 bytes.
    let big = b64(&[2u8; 512]);
    let mut off = 0;
    while off + 512 <= 8192 {
        t.ok("PUT", &[("obj", "chain"), ("off", &off.to_string()), ("data", &big)]);
        off += 512;
    }
    assert_eq!(t.err("PUT", &[("obj", "chain"), ("off", "8192"), ("data", "AA")]), ErrorCode::TooLarge);
    assert_eq!(t.ok("PUT", &[("obj", "chain"), ("off", "8191"), ("data", "AA")]).field("next"), Some("8192"));
}

#[test]
fn commit_checks_and_is_atomic_and_idempotent() {
    let ca = TestCa::new();
    let mut t = T::with(SimConfig { flash_ms: 300, ..SimConfig::new(SERIAL) });
    let spki = t.keygen();
    let (cert, chain) = ca.issue(SERIAL, &spki);

    assert_eq!(t.commit("cert", &cert), Err(ErrorCode::BadState), "nothing staged");
    t.put_all("cert", &cert);
    // Wrong length, wrong hash.
    let (_, sha) = T::commit_fields(&cert);
    let f = t.send("COMMIT", &[("obj", "cert"), ("len", &(cert.len() - 1).to_string()), ("sha256", &sha)]).frame.unwrap();
    assert_eq!(f.error_code(), Some(ErrorCode::VerifyFailed));
    let f = t.send("COMMIT", &[("obj", "cert"), ("len", &cert.len().to_string()), ("sha256", &b64(&[0u8; 32]))]).frame.unwrap();
    assert_eq!(f.error_code(), Some(ErrorCode::VerifyFailed));
    assert_eq!(t.err("COMMIT", &[("obj", "cert"), ("len", "1"), ("sha256", "AAAA")]), ErrorCode::BadRequest);
    // Good.
    let r = t.send("COMMIT", &[("obj", "cert"), ("len", &cert.len().to_string()), ("sha256", &sha)]);
    assert_eq!(r.busy_ms, 300, "flash_ms");
    assert!(r.frame.unwrap().is_ok());
    // Retried COMMIT (first answer lost): OK again, nothing changes.
    assert!(t.commit("cert", &cert).is_ok());
    assert_eq!(t.read_all("cert"), cert);
    assert_eq!(t.state(), "keyed");

    // A certificate for another key is refused, and the active one stays.
    let other = rcgen::KeyPair::generate().unwrap();
    let (foreign, _) = ca.issue(SERIAL, &rcgen::PublicKeyData::subject_public_key_info(&other));
    t.put_all("cert", &foreign);
    let f = t.send("COMMIT", &[("obj", "cert"), ("len", &foreign.len().to_string()), ("sha256", &T::commit_fields(&foreign).1)]);
    let f = f.frame.unwrap();
    assert_eq!(f.error_code(), Some(ErrorCode::VerifyFailed));
    assert_eq!(f.text("msg").as_deref(), Some("certificate key does not match device key"));
    assert_eq!(t.read_all("cert"), cert, "failed commit leaves the active certificate");
    // Garbage is refused too.
    t.put_all("cert", b"not a certificate");
    assert_eq!(t.commit("cert", b"not a certificate"), Err(ErrorCode::VerifyFailed));
    assert_eq!(t.read_all("cert"), cert);

    // Chain: must be DER certificates.
    t.put_all("chain", b"garbage");
    assert_eq!(t.commit("chain", b"garbage"), Err(ErrorCode::VerifyFailed));
    assert_eq!(t.err("READ", &[("obj", "chain"), ("off", "0"), ("max", "1")]), ErrorCode::NotFound);
    t.put_all("chain", &chain);
    t.commit("chain", &chain).unwrap();
    assert_eq!(t.read_all("chain"), chain);
    assert_eq!(t.state(), "provisioned");
    let snap = t.dev.snapshot();
    assert_eq!((snap.cert_der.as_deref(), snap.chain_der.as_deref()), (Some(&cert[..]), Some(&chain[..])));
    assert_eq!(snap.state, DeviceState::Provisioned);
    assert_eq!(snap.public_key_spki, Some(spki));
}

#[test]
fn prove_signs_the_pop_message_with_the_device_key() {
    for alg in ["p256", "p384"] {
        let mut t = T::with(SimConfig { prove_ms: 90, ..SimConfig::new(SERIAL) });
        assert_eq!(t.err("PROVE", &[("nonce", &b64(&nonce(16)))]), ErrorCode::BadState);
        let spki = unb64(t.ok("KEYGEN", &[("alg", alg)]).field("pub").unwrap()).unwrap();
        assert_eq!(t.err("PROVE", &[("nonce", &b64(&nonce(8)))]), ErrorCode::BadRequest);
        let n = nonce(32);
        let r = t.send("PROVE", &[("nonce", &b64(&n))]);
        assert_eq!(r.busy_ms, 90);
        let f = r.frame.unwrap();
        assert_eq!(f.field("alg"), Some(if alg == "p256" { "ecdsa-sha256" } else { "ecdsa-sha384" }));
        let sig = unb64(f.field("sig").unwrap()).unwrap();
        verify_proof(&spki, &pop_message(SERIAL, &n), &sig).unwrap();
        assert!(verify_proof(&spki, &pop_message("SIM-0002", &n), &sig).is_err(), "bound to the serial");
        assert!(verify_proof(&spki, &pop_message(SERIAL, &nonce(31)), &sig).is_err(), "bound to the nonce");
    }
}

#[test]
fn lock_is_two_phase_and_final() {
    let ca = TestCa::new();
    let mut t = T::new();
    assert_eq!(t.err("LOCK", &[("phase", "prepare")]), ErrorCode::BadState, "nothing to lock");
    t.provision(&ca);
    let token = t.ok("LOCK", &[("phase", "prepare")]).field("token").unwrap().to_string();
    assert_eq!(token.len(), 8);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(t.err("LOCK", &[("phase", "commit")]), ErrorCode::BadRequest);
    assert_eq!(t.err("LOCK", &[("phase", "commit"), ("token", "00000000")]), ErrorCode::BadState);
    // A wrong token invalidated the issued one (docs/protocol.md 4.9): prepare again.
    assert_eq!(t.err("LOCK", &[("phase", "commit"), ("token", &token)]), ErrorCode::BadState);
    let token = t.ok("LOCK", &[("phase", "prepare")]).field("token").unwrap().to_string();
    let f = t.ok("LOCK", &[("phase", "commit"), ("token", &token)]);
    assert_eq!(f.field("state"), Some("locked"));
    assert_eq!(t.state(), "locked");
    assert_eq!(t.err("LOCK", &[("phase", "commit"), ("token", &token)]), ErrorCode::Locked);
    assert_eq!(t.err("LOCK", &[("phase", "prepare")]), ErrorCode::Locked);
    // Locked: nothing can be written or re-keyed, but everything can be read and proven.
    assert_eq!(t.err("PUT", &[("obj", "cert"), ("off", "0"), ("data", "AAAA")]), ErrorCode::Locked);
    assert_eq!(t.err("COMMIT", &[("obj", "cert"), ("len", "3"), ("sha256", &b64(&[0; 32]))]), ErrorCode::Locked);
    assert_eq!(t.err("KEYGEN", &[("alg", "p256"), ("force", "1")]), ErrorCode::Locked);
    assert_eq!(t.ok("KEYGEN", &[("alg", "p256")]).field("new"), Some("0"));
    assert_eq!(t.err("RESET", &[("confirm", SERIAL)]), ErrorCode::Locked);
    t.read_all("cert");
    t.ok("PROVE", &[("nonce", &b64(&nonce(16)))]);
    assert!(t.dev.snapshot().locked);
}

#[test]
fn staging_after_prepare_invalidates_the_token() {
    let ca = TestCa::new();
    let mut t = T::new();
    t.provision(&ca);
    let token = t.ok("LOCK", &[("phase", "prepare")]).field("token").unwrap().to_string();
    t.ok("PUT", &[("obj", "chain"), ("off", "0"), ("data", "AAAA")]);
    assert_eq!(t.err("LOCK", &[("phase", "commit"), ("token", &token)]), ErrorCode::BadState);
}

#[test]
fn reset_wipes_unless_locked() {
    let ca = TestCa::new();
    let mut t = T::new();
    t.provision(&ca);
    assert_eq!(t.err("RESET", &[]), ErrorCode::BadRequest);
    assert_eq!(t.err("RESET", &[("confirm", "SIM-0002")]), ErrorCode::BadRequest);
    assert_eq!(t.ok("RESET", &[("confirm", SERIAL)]).field("state"), Some("blank"));
    assert_eq!(t.state(), "blank");
    assert_eq!(t.err("READ", &[("obj", "cert"), ("off", "0"), ("max", "1")]), ErrorCode::NotFound);
    assert_eq!(t.ok("KEYGEN", &[("alg", "p256")]).field("new"), Some("1"));
}

// ---- faults: each lie is exactly the lie it names ----

fn csr_under(spec: &str) -> (Vec<u8>, CsrFacts, Vec<u8>) {
    let mut t = T::faults(spec);
    let spki = t.keygen();
    let n = nonce(24);
    let der = t.csr(&n);
    let facts = CsrFacts::parse(&der).unwrap();
    (spki, facts, n)
}

#[test]
fn wrong_serial_csr_lies_only_about_the_subject() {
    let (spki, c, n) = csr_under("wrong-serial-csr");
    assert_ne!(c.cn.as_deref(), Some(SERIAL));
    assert_eq!(c.cn, c.serial_number);
    assert!(c.signature_ok);
    assert_eq!(c.challenge, Some(hex::encode(n)));
    assert_eq!(c.spki, spki);
}

#[test]
fn other_key_csr_lies_only_about_the_key() {
    let (spki, c, n) = csr_under("other-key-csr");
    assert_ne!(c.spki, spki);
    assert!(c.signature_ok, "self-consistent: signed by the other key");
    assert_eq!(c.cn.as_deref(), Some(SERIAL));
    assert_eq!(c.challenge, Some(hex::encode(n)));
}

#[test]
fn bad_csr_sig_lies_only_about_the_signature() {
    let (spki, c, n) = csr_under("bad-csr-sig");
    assert!(!c.signature_ok);
    assert_eq!(c.spki, spki);
    assert_eq!(c.cn.as_deref(), Some(SERIAL));
    assert_eq!(c.challenge, Some(hex::encode(n)));
}

#[test]
fn stale_nonce_lies_only_about_the_nonce() {
    let (spki, c, n) = csr_under("stale-nonce");
    let ch = c.challenge.clone().unwrap();
    assert_ne!(ch, hex::encode(&n));
    assert_eq!(ch.len(), 2 * n.len());
    assert!(c.signature_ok);
    assert_eq!(c.spki, spki);
    assert_eq!(c.cn.as_deref(), Some(SERIAL));
}

#[test]
fn weak_key_is_rsa_1024_with_a_valid_csr() {
    let (spki, c, n) = csr_under("weak-key");
    assert!(c.is_rsa);
    assert_eq!(c.key_bits, 1024);
    assert_eq!(c.sig_alg, "1.2.840.113549.1.1.11", "sha256WithRSAEncryption");
    assert!(c.signature_ok);
    assert_eq!(c.spki, spki);
    assert_eq!(c.challenge, Some(hex::encode(n)));
}

#[test]
fn bad_proof_signs_with_another_key() {
    let mut t = T::faults("bad-proof");
    let spki = t.keygen();
    let n = nonce(16);
    let sig = unb64(t.ok("PROVE", &[("nonce", &b64(&n))]).field("sig").unwrap()).unwrap();
    let err = verify_proof(&spki, &pop_message(SERIAL, &n), &sig).unwrap_err();
    assert!(err.contains("does not verify"));
    assert!(sig.len() > 60 && sig[0] == 0x30, "still a DER ECDSA signature");
}

// ---- transport faults as the host's decoder sees them ----

fn host_view(wire: &[u8]) -> Vec<Decoded> {
    Decoder::new(Direction::Response).feed(wire)
}

#[test]
fn silent_and_unplug_at() {
    let mut t = T::faults("silent");
    let r = t.send("HELLO", &[("proto", "1")]);
    assert_eq!((r.frame.is_none(), r.delivery), (true, Delivery::Silent));
    assert!(r.wire().is_empty());

    let mut t = T::faults("unplug-at=3,replug-after-ms=10");
    t.ok("HELLO", &[("proto", "1")]);
    t.ok("IDENT", &[]);
    let r = t.send("KEYGEN", &[("alg", "p256")]);
    assert_eq!((r.frame.is_none(), r.delivery), (true, Delivery::Unplug));
    assert_eq!(t.state(), "blank", "the unplugging request was not executed");
    t.ok("IDENT", &[]);
}

#[test]
fn oversized_and_bad_crc_at_n() {
    let mut t = T::faults("oversized-at=2,bad-crc-at=3");
    let r = t.send("HELLO", &[("proto", "1")]);
    assert!(matches!(host_view(&r.wire())[..], [Decoded::Frame(_)]));
    let r = t.send("IDENT", &[]);
    assert_eq!(r.delivery, Delivery::Oversized);
    assert_eq!(r.wire().len(), 1500);
    assert!(matches!(host_view(&r.wire())[..], [Decoded::Oversized { discarded: 1500 }]));
    let r = t.send("IDENT", &[]);
    assert_eq!(r.delivery, Delivery::BadCrc);
    assert!(matches!(&host_view(&r.wire())[..], [Decoded::Corrupt { .. }]));
    let r = t.send("IDENT", &[]);
    assert!(matches!(host_view(&r.wire())[..], [Decoded::Frame(_)]));

    let mut t = T::faults("oversized");
    for _ in 0..3 {
        assert_eq!(t.send("IDENT", &[]).wire().len(), 1500);
    }
    let mut t = T::faults("bad-crc");
    for _ in 0..3 {
        assert!(matches!(&host_view(&t.send("IDENT", &[]).wire())[..], [Decoded::Corrupt { .. }]));
    }
}

#[test]
fn noise_is_console_or_corrupt_and_the_answer_survives() {
    let mut t = T::faults("noise");
    let mut kinds = std::collections::HashSet::new();
    for _ in 0..60 {
        let r = t.send("IDENT", &[]);
        assert!((1..=3).contains(&r.console.len()));
        let seen = host_view(&r.wire());
        let (last, before) = seen.split_last().unwrap();
        assert!(matches!(last, Decoded::Frame(f) if f.rid == t.rid && f.is_ok()), "{seen:?}");
        assert_eq!(before.len(), r.console.len());
        for d in before {
            match d {
                Decoded::Console(s) if s.contains('\u{FFFD}') => kinds.insert("binary"),
                Decoded::Console(_) => kinds.insert("log"),
                Decoded::Corrupt { .. } => kinds.insert("fake marker"),
                other => panic!("noise produced {other:?}"),
            };
        }
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(t.dev.snapshot().console_lines_sent >= 60);
}

#[test]
fn slow_ms_delays_every_answer() {
    let mut t = T::with(SimConfig { keygen_ms: 100, ..SimConfig::new(SERIAL).with_faults("slow-ms=2000").unwrap() });
    assert_eq!(t.send("IDENT", &[]).busy_ms, 2000);
    assert_eq!(t.send("KEYGEN", &[("alg", "p256")]).busy_ms, 2100);
}

#[test]
fn connect_needs_a_provisioned_device_and_a_brokerca_and_reports_an_unreachable_broker() {
    let ca = TestCa::new();
    let mut t = T::new();
    assert!(imprint_devsim::device::CAPS.ends_with(",CONNECT"));
    let fields = [("host", "127.0.0.1"), ("port", "1"), ("topic", "t/dev")];
    t.keygen();
    assert_eq!(t.err("CONNECT", &fields), ErrorCode::BadState, "no certificate yet");
    let (_, chain) = t.provision(&ca);
    assert_eq!(t.err("CONNECT", &fields), ErrorCode::BadState, "no brokerca yet");
    assert_eq!(t.err("CONNECT", &[("host", "127.0.0.1"), ("topic", "t")]), ErrorCode::BadRequest, "port missing");
    // brokerca is written like chain: staged, checked to be DER certificates, committed.
    t.put_all("brokerca", b"not a certificate");
    assert_eq!(t.commit("brokerca", b"not a certificate").unwrap_err(), ErrorCode::VerifyFailed);
    t.put_all("brokerca", &chain);
    t.commit("brokerca", &chain).unwrap();
    assert_eq!(t.read_all("brokerca"), chain);
    // Port 1 on loopback: nothing listens.
    let r = t.send("CONNECT", &fields);
    let f = r.frame.expect("an answer");
    assert_eq!(f.error_code(), Some(ErrorCode::ConnectFailed), "{f}");
    assert_eq!(f.field("reason"), Some("unreachable"), "{f}");
}
