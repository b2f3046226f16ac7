//! The AWS KMS signer against a real KMS API (`moto_server` on loopback),
//! with faults moto cannot make itself (slow answers, throttling) injected by
//! a real HTTP proxy in front of it. See `support/kms.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use imprint_core::ca::{self, CaSubject};
use imprint_core::signer::{SigAlg, Signer, SignerError};
use imprint_signer::awskms::{self, KmsSigner};
use imprint_signer::open_signer;
use imprint_tests::kms::{kms_call, Fault, FaultProxy, Moto, REGION, TEST_ACCESS_KEY, TEST_SECRET};
use imprint_tests::signer_suite::{signer_suite_for_server, verify};

/// What moto really signs for `msg`: it ignores MessageType=DIGEST and hashes
/// the digest again, so a digest-path signature verifies over H(msg).
fn moto_signed(alg: SigAlg) -> impl Fn(&[u8]) -> Vec<u8> {
    move |m: &[u8]| if awskms::sends_digest(m.len()) { alg.digest(m) } else { m.to_vec() }
}

fn openssl_verify_root(der: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.pem");
    std::fs::write(&path, pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))).unwrap();
    let out = Command::new("openssl").args(["verify", "-x509_strict", "-check_ss_sig", "-CAfile"]).arg(&path).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(": OK"), "openssl: {text}{}", String::from_utf8_lossy(&out.stderr));
}

fn no_secret(text: &str) {
    assert!(!text.contains(TEST_SECRET), "the AWS secret leaked: {text}");
}

#[test]
fn suite_kms_p256() {
    let moto = Moto::shared();
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = open_signer(&key.uri(&moto.endpoint(), ""), None).unwrap();
    assert_eq!(s.algorithm(), SigAlg::EcdsaP256Sha256);
    signer_suite_for_server(&mut *s, &[TEST_SECRET, TEST_ACCESS_KEY], &moto_signed(SigAlg::EcdsaP256Sha256));
}

#[test]
fn suite_kms_p384() {
    let moto = Moto::shared();
    let key = moto.create_key(SigAlg::EcdsaP384Sha384);
    let mut s = open_signer(&key.uri(&moto.endpoint(), ""), None).unwrap();
    assert_eq!(s.algorithm(), SigAlg::EcdsaP384Sha384);
    signer_suite_for_server(&mut *s, &[TEST_SECRET, TEST_ACCESS_KEY], &moto_signed(SigAlg::EcdsaP384Sha384));
}

#[test]
fn kms_roots_p256_and_p384_pass_openssl_strict() {
    let moto = Moto::shared();
    for alg in [SigAlg::EcdsaP256Sha256, SigAlg::EcdsaP384Sha384] {
        let key = moto.create_key(alg);
        let mut s = open_signer(&key.uri(&moto.endpoint(), ""), None).unwrap();
        let subject = CaSubject { common_name: "KMS Test Root".into(), organization: Some("Imprint".into()), country: Some("DE".into()) };
        let der = ca::self_signed_root(&mut *s, &subject, 365, false).unwrap();
        ca::check_ca_matches_signer(&der, &*s).unwrap();
        openssl_verify_root(&der);
    }
}

#[test]
fn messages_up_to_4096_bytes_go_raw_and_longer_ones_as_a_digest() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = KmsSigner::open(&key.uri(&proxy.endpoint(), "")).unwrap();
    let at_limit = vec![0x42u8; awskms::RAW_MESSAGE_MAX];
    let sig = s.sign(&at_limit).unwrap();
    verify(&s, &at_limit, &sig).expect("a 4096-byte message is signed as RAW");
    let above = vec![0x42u8; awskms::RAW_MESSAGE_MAX + 1];
    let sig = s.sign(&above).unwrap();
    verify(&s, &SigAlg::EcdsaP256Sha256.digest(&above), &sig).expect("moto signed exactly our SHA-256 digest");
    let types: Vec<_> = proxy.seen().into_iter().filter(|x| x.op == "Sign").map(|x| x.message_type.unwrap_or_default()).collect();
    assert_eq!(types, ["RAW", "DIGEST"]);
}

#[test]
fn the_public_key_is_fetched_once_and_cached() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = open_signer(&key.uri(&proxy.endpoint(), ""), None).unwrap();
    for i in 0..5u8 {
        let msg = [i; 100];
        let sig = s.sign(&msg).unwrap();
        verify(&*s, &msg, &sig).unwrap();
    }
    assert_eq!(s.public_key_spki().len(), 91, "P-256 SPKI");
    assert_eq!(proxy.count("GetPublicKey", "passed"), 1);
    assert_eq!(proxy.count("Sign", "passed"), 5);
}

#[test]
fn an_unknown_key_is_key_not_found_naming_the_key() {
    let moto = Moto::shared();
    let uri = format!("awskms:key-id=alias/no-such-key;region={REGION};endpoint={}", moto.endpoint());
    let err = open_signer(&uri, None).unwrap_err();
    assert!(matches!(err, SignerError::KeyNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("alias/no-such-key"), "{err}");
    assert!(!err.is_retryable());
    no_secret(&format!("{err} {err:?}"));
}

#[test]
fn an_unreachable_endpoint_is_a_transient_error_within_the_timeout() {
    moto_env();
    let port = imprint_tests::kms::free_port(); // nothing listens there
    let uri = format!("awskms:key-id=alias/ca;region={REGION};endpoint=http://127.0.0.1:{port};timeout-ms=300;retries=2");
    let t = Instant::now();
    let err = open_signer(&uri, None).unwrap_err();
    assert!(matches!(err, SignerError::Transient(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("3 attempts"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    no_secret(&format!("{err} {err:?}"));
}

fn moto_env() {
    imprint_tests::kms::init_process_env();
}

#[test]
fn throttled_signs_are_retried_with_backoff_and_succeed() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = KmsSigner::open(&key.uri(&proxy.endpoint(), "retries=3")).unwrap();
    proxy.add(Some("Sign"), Fault::Throttle, Some(2));
    let sig = s.sign(b"tbs").unwrap();
    verify(&s, b"tbs", &sig).unwrap();
    assert_eq!(proxy.count("Sign", "throttled"), 2);
    assert_eq!(proxy.count("Sign", "passed"), 1);
    // Backoff: the retries were spread out, not fired at once.
    let signs: Vec<_> = proxy.seen().into_iter().filter(|x| x.op == "Sign").collect();
    for w in signs.windows(2) {
        assert!(w[1].at - w[0].at >= Duration::from_millis(10), "retry without a pause");
    }
}

#[test]
fn throttling_beyond_the_retries_is_transient_and_names_the_cause_without_secrets() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = KmsSigner::open(&key.uri(&proxy.endpoint(), "retries=2")).unwrap();
    proxy.add(Some("Sign"), Fault::Throttle, None);
    let err = s.sign(b"tbs").unwrap_err();
    assert!(matches!(err, SignerError::Transient(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("ThrottlingException") && text.contains("Rate exceeded"), "{text}");
    assert_eq!(proxy.count("Sign", "throttled"), 3, "1 try + 2 retries");
    no_secret(&format!("{err} {err:?}"));

    // Degraded: while KMS keeps failing, a call makes one attempt, not three.
    let _ = s.sign(b"tbs").unwrap_err();
    assert_eq!(proxy.count("Sign", "throttled"), 4);
    // Back to normal after the next success.
    proxy.clear();
    s.sign(b"tbs").unwrap();
    proxy.add(Some("Sign"), Fault::Throttle, Some(1));
    s.sign(b"tbs").unwrap();
    assert_eq!(proxy.count("Sign", "throttled"), 5);
}

#[test]
fn an_answer_slower_than_the_timeout_is_transient_and_bounded() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = KmsSigner::open(&key.uri(&proxy.endpoint(), "timeout-ms=300;retries=1")).unwrap();
    proxy.add(Some("Sign"), Fault::Delay(Duration::from_millis(1500)), None);
    let t = Instant::now();
    let err = s.sign(b"tbs").unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, SignerError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("300 ms") || err.to_string().contains("deadline"), "{err}");
    // 2 attempts x 300 ms + one backoff (<= 200 ms at this step), with slack
    // for a loaded machine; waiting for the late answers would take 3 s.
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(2000), "{took:?}");
    assert_eq!(proxy.count("Sign", "delayed"), 2);
    proxy.clear();
    let sig = s.sign(b"tbs").unwrap();
    verify(&s, b"tbs", &sig).unwrap();
}

#[test]
fn the_client_side_rate_limit_spaces_every_request() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let rps = 10;
    let mut s = KmsSigner::open(&key.uri(&proxy.endpoint(), &format!("rps={rps}"))).unwrap();
    let t = Instant::now();
    for _ in 0..25 {
        s.sign(b"tbs").unwrap();
    }
    // 26 requests (GetPublicKey + 25 Sign) at 10/s: at least 2.5 s.
    assert!(t.elapsed() >= Duration::from_millis(2400), "{:?}", t.elapsed());
    assert_windows_hold_at_most(&proxy, rps);
}

/// No window of one second (minus 10 ms for loopback jitter between the
/// client and the proxy's clock reading) holds more than `rps` requests.
pub fn assert_windows_hold_at_most(proxy: &FaultProxy, rps: usize) {
    let seen = proxy.seen();
    assert!(seen.len() > rps, "too few requests to judge: {}", seen.len());
    for (i, w) in seen.windows(rps + 1).enumerate() {
        let span = w[rps].at - w[0].at;
        assert!(span >= Duration::from_millis(990), "requests {i}..={} within {span:?}: more than {rps} in a second", i + rps);
    }
}

#[test]
fn the_health_check_is_one_describe_key_without_retries() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = KmsSigner::open(&key.uri(&proxy.endpoint(), "timeout-ms=300;retries=3")).unwrap();
    s.check().unwrap();
    assert_eq!(proxy.count("DescribeKey", "passed"), 1);
    proxy.add(Some("DescribeKey"), Fault::Throttle, None);
    let err = s.check().unwrap_err();
    assert!(matches!(err, SignerError::Transient(_)), "{err:?}");
    assert_eq!(proxy.count("DescribeKey", "throttled"), 1, "a check makes a single attempt");
    assert_eq!(proxy.count("Sign", "passed"), 0, "a check never signs");
}

#[test]
fn signing_inside_an_async_runtime_is_an_error_not_a_panic() {
    let moto = Moto::shared();
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut s = KmsSigner::open(&key.uri(&moto.endpoint(), "")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let err = rt.block_on(async { s.sign(b"x").unwrap_err() });
    assert!(err.to_string().contains("async runtime"), "{err}");
    // Outside it, the same signer works.
    s.sign(b"x").unwrap();
}

#[test]
fn create_key_with_an_alias_names_the_new_key_and_refuses_to_reuse_the_alias() {
    let moto = Moto::shared();
    let uri = format!("awskms:key-id=alias/imprint-ca;region={REGION};endpoint={}", moto.endpoint());
    let made = awskms::create_key(&uri, SigAlg::EcdsaP384Sha384).unwrap();
    assert_eq!(made, uri, "with an alias the URI stays as given");
    let s = open_signer(&made, None).unwrap();
    assert_eq!(s.algorithm(), SigAlg::EcdsaP384Sha384);
    let err = awskms::create_key(&uri, SigAlg::EcdsaP256Sha256).unwrap_err();
    assert!(err.to_string().contains("already names a key"), "{err}");
    let err = awskms::create_key(&format!("awskms:key-id=1234;region={REGION};endpoint={}", moto.endpoint()), SigAlg::EcdsaP256Sha256)
        .unwrap_err();
    assert!(matches!(err, SignerError::BadUri(_)), "{err:?}");
}

/// A CA key must be sign-only (issue 12): the key `ca init --generate-key`
/// creates is SIGN_VERIFY as KMS itself reports it, and a key of another
/// usage (ENCRYPT_DECRYPT) is refused when the signer opens.
#[test]
fn kms_ca_key_is_sign_verify_and_a_key_of_another_usage_is_refused() {
    let moto = Moto::shared();
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let d = kms_call(moto.port(), "DescribeKey", &serde_json::json!({ "KeyId": key.arn })).unwrap();
    assert_eq!(d["KeyMetadata"]["KeyUsage"], "SIGN_VERIFY", "{d:#}");

    let made = kms_call(moto.port(), "CreateKey", &serde_json::json!({ "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "RSA_2048" })).unwrap();
    let arn = made["KeyMetadata"]["Arn"].as_str().unwrap().to_string();
    assert_eq!(made["KeyMetadata"]["KeyUsage"], "ENCRYPT_DECRYPT", "{made:#}");
    let err = open_signer(&format!("awskms:key-id={arn};region={REGION};endpoint={}", moto.endpoint()), None).expect_err("refused");
    assert!(err.to_string().contains("a CA key must be SIGN_VERIFY"), "{err}");
}
