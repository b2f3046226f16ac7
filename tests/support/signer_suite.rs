//! One API suite every Signer backend must pass (dev, PKCS#11 on SoftHSM, AWS
//! KMS on moto): public key shape, sign/verify, info without secrets, and a CA
//! certificate built through rcgen.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_core::ca::{self, CaSubject};
use imprint_core::signer::{spki_subject_key_bits, SigAlg, Signer};
use x509_parser::prelude::FromDer;

const ID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

fn curve_oid(alg: SigAlg) -> &'static str {
    match alg {
        SigAlg::EcdsaP256Sha256 => "1.2.840.10045.3.1.7",
        SigAlg::EcdsaP384Sha384 => "1.3.132.0.34",
        other => panic!("suite does not know {other:?}"),
    }
}

fn verify_alg(alg: SigAlg) -> &'static ring::signature::EcdsaVerificationAlgorithm {
    match alg {
        SigAlg::EcdsaP256Sha256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        SigAlg::EcdsaP384Sha384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
        other => panic!("suite does not know {other:?}"),
    }
}

/// Verify a DER ECDSA signature made by `signer` with ring.
pub fn verify(signer: &dyn Signer, msg: &[u8], sig: &[u8]) -> Result<(), ring::error::Unspecified> {
    let raw = spki_subject_key_bits(signer.public_key_spki()).expect("signer SPKI");
    ring::signature::UnparsedPublicKey::new(verify_alg(signer.algorithm()), raw).verify(msg, sig)
}

/// Run the suite with no backend-specific secrets to look for.
pub fn signer_suite(signer: &mut dyn Signer) {
    signer_suite_with_secrets(signer, &[]);
}

/// Run the suite; `secrets` (PINs, credentials) must appear in neither
/// `info()` nor `Debug`.
pub fn signer_suite_with_secrets(signer: &mut dyn Signer, secrets: &[&str]) {
    signer_suite_for_server(signer, secrets, &|m| m.to_vec());
}

/// Run the suite against a server that does not sign exactly the message
/// it is sent: `server_signed(msg)` is what it really signs for `msg`.
/// Only moto needs this: it ignores `MessageType=DIGEST` and hashes the
/// digest again, so for a message the backend sends as a digest the
/// signature verifies over `H(msg)`, which proves the backend sent exactly
/// `H(msg)`. Real servers sign `msg` (the identity map).
pub fn signer_suite_for_server(signer: &mut dyn Signer, secrets: &[&str], server_signed: &dyn Fn(&[u8]) -> Vec<u8>) {
    let alg = signer.algorithm();

    // Public key: a DER SPKI, id-ecPublicKey on the curve of the algorithm,
    // an uncompressed point.
    let (rest, spki) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(signer.public_key_spki()).expect("public_key_spki is a DER SubjectPublicKeyInfo");
    assert!(rest.is_empty(), "trailing bytes after the SPKI");
    assert_eq!(spki.algorithm.algorithm.to_id_string(), ID_EC_PUBLIC_KEY);
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).expect("named curve parameter").to_id_string();
    assert_eq!(curve, curve_oid(alg));
    let point = &spki.subject_public_key.data;
    assert_eq!(point.len(), 1 + 2 * alg.field_len());
    assert_eq!(point[0], 0x04, "uncompressed point");

    // Sign and verify, including an empty message and one above KMS's 4 KB
    // RAW limit; a tampered message must fail.
    let big = vec![0x5au8; 5000];
    for msg in [&b""[..], b"imprint signer suite", &big] {
        let sig = signer.sign(msg).expect("sign");
        assert_eq!(sig[0], 0x30, "DER ECDSA-Sig-Value");
        let signed = server_signed(msg);
        verify(signer, &signed, &sig).expect("signature verifies");
        let mut other = signed.clone();
        other.push(1);
        assert!(verify(signer, &other, &sig).is_err(), "tampered message verifies");
    }

    // Info names the backend and carries no secret.
    let info = signer.info();
    assert!(!info.kind.is_empty());
    assert!(info.uri.starts_with(&format!("{}:", info.kind)), "uri {:?} should start with {}:", info.uri, info.kind);
    assert_eq!(info.development, info.kind == "dev");
    // (`Debug for dyn Signer` prints info().uri, covered here.)
    let shown = format!("{} {:?}", info.uri, info);
    assert!(!shown.contains("pin-value"), "{shown}");
    for s in secrets {
        assert!(!shown.contains(s), "secret appears in {shown}");
    }

    // A CA certificate built and signed through rcgen matches the key.
    let subject = if info.development { CaSubject::new(ca::DEVELOPMENT_CA_CN) } else { CaSubject::new("Imprint signer suite CA") };
    let der = ca::self_signed_root(signer, &subject, 1, info.development).expect("root");
    ca::check_ca_matches_signer(&der, signer).expect("root matches signer");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("root parses");
    cert.verify_signature(None).expect("root self-signature verifies");
}
