//! The test vectors of docs/protocol.md (section 10) are checked against
//! the code, so the document and the implementation cannot drift: every
//! frame's CRC, every exact line of the transcript, and the CSR and
//! proof-of-possession bytes for the fixed key (deterministic ECDSA,
//! RFC 6979, through the `p256` crate) and nonces.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::keys::build_csr;
use imprint_proto::codec::{crc16, parse_frame, Direction};
use imprint_proto::session::pop_message;
use p256::ecdsa::signature::Signer;
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

/// The private key of RFC 6979 A.2.5 (P-256).
const KEY_HEX: &str = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
const SERIAL: &str = "SIM-0001";

struct Det {
    key: p256::ecdsa::SigningKey,
    point: Vec<u8>,
}

impl Det {
    fn new() -> Det {
        let key = p256::ecdsa::SigningKey::from_slice(&hex::decode(KEY_HEX).unwrap()).unwrap();
        let point = key.verifying_key().to_encoded_point(false).as_bytes().to_vec();
        Det { key, point }
    }
}

impl PublicKeyData for Det {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for Det {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md")).unwrap()
}

/// The fenced block right after `<!-- vector: NAME -->`.
fn vector(doc: &str, name: &str) -> String {
    let marker = format!("<!-- vector: {name} -->");
    let at = doc.find(&marker).unwrap_or_else(|| panic!("docs/protocol.md has no {marker}"));
    let rest = &doc[at + marker.len()..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

fn hex_of(block: &str) -> String {
    block.split_whitespace().collect::<String>().to_ascii_lowercase()
}

fn nonce(from: u8) -> Vec<u8> {
    (from..from + 16).collect()
}

fn computed() -> Vec<(&'static str, String)> {
    let k = Det::new();
    let spki = k.subject_public_key_info();
    let csr = build_csr(SERIAL, &nonce(0x10), &k).unwrap();
    let msg = pop_message(SERIAL, &nonce(0x20));
    let sig = SigningKey::sign(&k, &msg).unwrap();
    vec![("spki", hex::encode(&spki)), ("csr", hex::encode(&csr)), ("pop-message", hex::encode(&msg)), ("pop-signature", hex::encode(&sig))]
}

#[test]
fn the_csr_and_proof_vectors_in_the_document_are_what_the_code_makes() {
    let doc = doc();
    let mut wrong = Vec::new();
    for (name, want) in computed() {
        if hex_of(&vector(&doc, name)) != want {
            wrong.push(format!("{name}: the document is stale; it should read\n{}", wrap(&want)));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_vectors_verify_independently_of_the_code_that_made_them() {
    let k = Det::new();
    let csr = hex::decode(hex_of(&vector(&doc(), "csr"))).unwrap();
    let spki = k.subject_public_key_info();
    imprint_core::issuance::check_csr(&csr, SERIAL, &spki, &nonce(0x10), &imprint_core::issuance::Profile::default()).unwrap();
    let sig = hex::decode(hex_of(&vector(&doc(), "pop-signature"))).unwrap();
    imprint_core::issuance::verify_pop(&spki, &pop_message(SERIAL, &nonce(0x20)), &sig).unwrap();
}

#[test]
fn every_frame_vector_and_exact_transcript_line_has_its_crc() {
    let doc = doc();
    assert_eq!(crc16(b"123456789"), 0x29B1);
    let frames = vector(&doc, "frames");
    let mut n = 0;
    for line in frames.lines().chain(vector(&doc, "transcript").lines()) {
        let line = line.trim();
        if !line.starts_with('@') || line.contains('…') {
            continue;
        }
        let dir = if line.starts_with("@>") { Direction::Request } else { Direction::Response };
        parse_frame(line.as_bytes(), dir).unwrap_or_else(|e| panic!("{line}: {e}"));
        n += 1;
    }
    assert!(n >= 30, "only {n} frames checked");
    // The CRC table: `covered bytes` | CRC.
    for row in vector(&doc, "crc").lines().filter(|l| l.contains('|')) {
        let (text, crc) = row.rsplit_once('|').unwrap();
        let text = text.trim().trim_matches('"');
        let want = u16::from_str_radix(crc.trim(), 16).unwrap();
        assert_eq!(crc16(text.as_bytes()), want, "{row}");
    }
}

fn wrap(hex: &str) -> String {
    hex.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\n")
}

/// `cargo test -p imprint-devsim --test vectors -- --ignored --nocapture print_vectors` prints them.
#[test]
#[ignore]
fn print_vectors() {
    for (name, v) in computed() {
        println!("{name}:\n{}\n", wrap(&v));
    }
}

#[test]
fn the_frame_vectors_are_what_the_simulator_answers() {
    let doc = doc();
    let block = vector(&doc, "frames");
    let lines: Vec<&str> = block.lines().map(str::trim).filter(|l| l.starts_with('@')).collect();
    let mut dev = imprint_devsim::Device::new(&imprint_devsim::SimConfig::new(SERIAL));
    let mut pairs = 0;
    for w in lines.windows(2) {
        if !w[0].starts_with("@>") || !w[1].starts_with("@<") {
            continue;
        }
        let req = parse_frame(w[0].as_bytes(), Direction::Request).unwrap();
        let answer = dev.handle(&req).frame.unwrap_or_else(|| panic!("no answer to {}", w[0]));
        assert_eq!(answer.to_string(), w[1], "the simulator's answer to {}", w[0]);
        pairs += 1;
    }
    assert!(pairs >= 10, "{pairs}");
}
