//! Signer backends against a real SoftHSM2 token (and the dev signer through
//! the same suite). Each test has its own token; see `support/softhsm.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use imprint_core::ca::{self, CaError, CaSubject};
use imprint_core::signer::{SigAlg, Signer, SignerError};
use imprint_signer::{generate_ca_key, open_signer, Pin};
use imprint_tests::signer_suite::{signer_suite, signer_suite_with_secrets, verify};
use imprint_tests::softhsm::{self, SoftHsm, USER_PIN};

/// SoftHSM is part of the test environment (scripts/setup installs it):
/// its absence is a failure, never a silent skip.
macro_rules! require_softhsm {
    () => {
        assert!(softhsm::available(), "SoftHSM2 is not installed ({}): run scripts/setup", softhsm::MODULE);
    };
}

/// A token with one CA key of `alg` labelled `key`, and its signer.
fn token_with_key(label: &str, key: &str, alg: SigAlg) -> (SoftHsm, String, Box<dyn Signer>) {
    let hsm = SoftHsm::new(label);
    let uri = hsm.uri(key);
    generate_ca_key(&uri, Some(hsm.pin()), alg).unwrap();
    let signer = open_signer(&uri, Some(hsm.pin())).unwrap();
    (hsm, uri, signer)
}

/// `openssl verify -x509_strict -check_ss_sig` of a self-signed root.
fn openssl_verify_root(der: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.pem");
    std::fs::write(&path, pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-check_ss_sig", "-CAfile"])
        .arg(&path)
        .arg(&path)
        .output()
        .expect("run openssl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(": OK"), "openssl verify failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
}

fn root_subject() -> CaSubject {
    CaSubject { common_name: "Imprint Test Root CA".into(), organization: Some("Imprint".into()), country: Some("DE".into()) }
}

#[test]
fn p256_root_signed_in_hsm_passes_openssl_strict() {
    require_softhsm!();
    let (_hsm, _uri, mut signer) = token_with_key("root-p256", "ca-key", SigAlg::EcdsaP256Sha256);
    assert_eq!(signer.algorithm(), SigAlg::EcdsaP256Sha256);
    let info = signer.info();
    assert_eq!(info.kind, "pkcs11");
    assert!(!info.development);

    let der = ca::self_signed_root(&mut *signer, &root_subject(), 3650, false).unwrap();
    ca::check_ca_matches_signer(&der, &*signer).unwrap();
    openssl_verify_root(&der);
}

/// The CA key made in the HSM had decrypt and unwrap usage (CKA_DECRYPT,
/// CKA_UNWRAP were left to SoftHSM's default, true) although the code
/// called it sign-only (issue 12). Read back from the token.
#[test]
fn hsm_ca_key_is_sign_only_no_decrypt_unwrap_or_derive() {
    require_softhsm!();
    for (token, alg) in [("sign-only-p256", SigAlg::EcdsaP256Sha256), ("sign-only-p384", SigAlg::EcdsaP384Sha384)] {
        let (hsm, _uri, mut signer) = token_with_key(token, "ca-key", alg);
        let (private, public) = hsm.key_flags("ca-key");
        let expected_private = [
            ("CKA_SIGN", true),
            ("CKA_SIGN_RECOVER", false),
            ("CKA_DECRYPT", false),
            ("CKA_UNWRAP", false),
            ("CKA_DERIVE", false),
            ("CKA_SENSITIVE", true),
            ("CKA_EXTRACTABLE", false),
        ];
        let expected_public =
            [("CKA_VERIFY", true), ("CKA_VERIFY_RECOVER", false), ("CKA_ENCRYPT", false), ("CKA_WRAP", false), ("CKA_DERIVE", false)];
        assert_eq!(private, expected_private.into_iter().collect(), "{token}: private key");
        assert_eq!(public, expected_public.into_iter().collect(), "{token}: public key");
        // And it still signs.
        let sig = signer.sign(b"still signs").unwrap();
        verify(&*signer, b"still signs", &sig).unwrap();
    }
}

#[test]
fn p384_key_works() {
    require_softhsm!();
    let (_hsm, _uri, mut signer) = token_with_key("root-p384", "ca-key", SigAlg::EcdsaP384Sha384);
    assert_eq!(signer.algorithm(), SigAlg::EcdsaP384Sha384);
    let der = ca::self_signed_root(&mut *signer, &root_subject(), 365, false).unwrap();
    ca::check_ca_matches_signer(&der, &*signer).unwrap();
    openssl_verify_root(&der);
}

#[test]
fn hsm_signature_verifies_with_ring() {
    require_softhsm!();
    let (_hsm, _uri, mut signer) = token_with_key("ring-verify", "ca-key", SigAlg::EcdsaP256Sha256);
    let msg = b"to be signed certificate bytes";
    let sig = signer.sign(msg).unwrap();
    let raw = imprint_core::signer::spki_subject_key_bits(signer.public_key_spki()).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, raw).verify(msg, &sig).unwrap();
}

#[test]
fn wrong_pin_is_rejected_and_never_echoed() {
    require_softhsm!();
    let hsm = SoftHsm::new("wrong-pin");
    let uri = hsm.uri("ca-key");
    generate_ca_key(&uri, Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap();
    let wrong = "97531";
    let err = open_signer(&uri, Some(Pin::new(wrong))).unwrap_err();
    assert!(matches!(err, SignerError::PinRejected(_)), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(wrong), "{shown}");
        assert!(!shown.contains(USER_PIN), "{shown}");
    }
}

#[test]
fn wrong_object_label_is_key_not_found() {
    require_softhsm!();
    let hsm = SoftHsm::new("wrong-label");
    generate_ca_key(&hsm.uri("ca-key"), Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap();
    let err = open_signer(&hsm.uri("no-such-key"), Some(hsm.pin())).unwrap_err();
    assert!(matches!(err, SignerError::KeyNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-key"), "{err}");
}

#[test]
fn unknown_token_is_token_absent() {
    require_softhsm!();
    let _hsm = SoftHsm::new("present-token");
    let uri = format!("pkcs11:token=absent-token;object=ca-key?module-path={}", softhsm::MODULE);
    let err = open_signer(&uri, Some(Pin::new(USER_PIN))).unwrap_err();
    assert!(matches!(err, SignerError::TokenAbsent(_)), "{err:?}");
}

#[test]
fn check_fails_for_a_different_key() {
    require_softhsm!();
    let hsm = SoftHsm::new("two-keys");
    for key in ["ca-a", "ca-b"] {
        generate_ca_key(&hsm.uri(key), Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap();
    }
    let mut a = open_signer(&hsm.uri("ca-a"), Some(hsm.pin())).unwrap();
    let b = open_signer(&hsm.uri("ca-b"), Some(hsm.pin())).unwrap();
    let der = ca::self_signed_root(&mut *a, &root_subject(), 30, false).unwrap();
    ca::check_ca_matches_signer(&der, &*a).unwrap();
    let err = ca::check_ca_matches_signer(&der, &*b).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch(_)), "{err:?}");
    assert!(err.to_string().contains("wrong pkcs11 object/id"), "{err}");
}

#[test]
fn generate_refuses_an_existing_label() {
    require_softhsm!();
    let hsm = SoftHsm::new("dup-label");
    let uri = hsm.uri("ca-key");
    generate_ca_key(&uri, Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap();
    let err = generate_ca_key(&uri, Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn pin_from_pin_source_file() {
    require_softhsm!();
    let hsm = SoftHsm::new("pin-source");
    generate_ca_key(&hsm.uri("ca-key"), Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
    let uri = format!("{}&pin-source=file:{}", hsm.uri("ca-key"), pin_file.display());
    let mut signer = open_signer(&uri, None).unwrap();
    signer.sign(b"x").unwrap();
    assert!(signer.info().uri.contains("pin-source=file:"));
}

#[test]
fn signer_logs_in_again_after_losing_the_login() {
    require_softhsm!();
    let (hsm, _uri, mut signer) = token_with_key("relogin", "ca-key", SigAlg::EcdsaP256Sha256);
    let sig = signer.sign(b"before").unwrap();
    verify(&*signer, b"before", &sig).unwrap();
    hsm.force_logout();
    let sig = signer.sign(b"after").unwrap();
    verify(&*signer, b"after", &sig).unwrap();
}

/// Issue 18: a signature the worker started ahead (`prepare`: C_SignInit
/// while idle, then C_Sign alone) is a valid signature of the message given
/// later, for both curves; preparing twice starts one operation; signing
/// without preparing still works in between.
#[test]
fn a_signature_started_ahead_verifies_on_both_curves() {
    require_softhsm!();
    for (label, alg) in [("ahead-p256", SigAlg::EcdsaP256Sha256), ("ahead-p384", SigAlg::EcdsaP384Sha384)] {
        let (hsm, uri, mut signer) = token_with_key(label, "ca-key", alg);
        let direct = imprint_signer::Pkcs11Signer::open(&uri, Some(hsm.pin())).unwrap();
        assert!(direct.signs_ahead(), "{label}: SoftHSM's own C_Sign reaches cryptoki's session, so signatures start ahead");
        drop(direct);
        signer.prepare();
        signer.prepare();
        let first = signer.sign(b"prepared").unwrap();
        verify(&*signer, b"prepared", &first).unwrap();
        let plain = signer.sign(b"not prepared").unwrap();
        verify(&*signer, b"not prepared", &plain).unwrap();
        signer.prepare();
        let again = signer.sign(b"prepared again").unwrap();
        verify(&*signer, b"prepared again", &again).unwrap();
        assert!(verify(&*signer, b"prepared", &again).is_err(), "{label}: a signature of another message must not verify");
    }
}

/// Issue 18: the login lost between `prepare` and `sign` (the HSM logged
/// the process out) still ends in a valid signature.
#[test]
fn a_signature_started_ahead_survives_a_lost_login() {
    require_softhsm!();
    let (hsm, _uri, mut signer) = token_with_key("ahead-logout", "ca-key", SigAlg::EcdsaP256Sha256);
    signer.prepare();
    hsm.force_logout();
    let sig = signer.sign(b"after logout").unwrap();
    verify(&*signer, b"after logout", &sig).unwrap();
    let sig = signer.sign(b"and again").unwrap();
    verify(&*signer, b"and again", &sig).unwrap();
}

#[test]
fn suite_softhsm_p256() {
    require_softhsm!();
    let (_hsm, _uri, mut signer) = token_with_key("suite-p256", "ca-key", SigAlg::EcdsaP256Sha256);
    signer_suite_with_secrets(&mut *signer, &[USER_PIN]);
}

#[test]
fn suite_softhsm_p384() {
    require_softhsm!();
    let (_hsm, _uri, mut signer) = token_with_key("suite-p384", "ca-key", SigAlg::EcdsaP384Sha384);
    signer_suite_with_secrets(&mut *signer, &[USER_PIN]);
}

#[test]
fn suite_dev() {
    let dir = tempfile::tempdir().unwrap();
    let mut signer = open_signer(&format!("dev:{}", dir.path().display()), None).unwrap();
    signer_suite(&mut *signer);
}
