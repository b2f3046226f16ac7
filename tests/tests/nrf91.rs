//! The nRF91 AT dialect end to end over real pseudo-terminals: the station
//! provisions simulated nRF91 modems (AT%KEYGEN with a COSE_Sign1
//! attestation, AT%CMNG writes and read-back) through the same driver,
//! store and signer as native boards, chosen by a `[[dialects]]` rule.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::{SimConfig, SimDevice, SimHandle};
use imprint_proto::{DialectKind, Outcome};
use imprint_station::config::DialectRule;
use imprint_tests::station::{openssl_verify, path_of, split_der_chain, TestStation};

const TAG: u32 = imprint_nrf91::DEFAULT_SEC_TAG;

/// A station whose ports under `<dir>/nrf91/` speak the nRF91 dialect.
fn station() -> TestStation {
    let mut ts = TestStation::new();
    let glob = ts.dir.path().join("nrf91").join("*").display().to_string();
    ts.cfg.dialects = vec![DialectRule { dialect: DialectKind::Nrf91, port: Some(glob), vid: None, pid: None }];
    ts
}

fn modem(ts: &TestStation, serial: &str, faults: &str) -> SimHandle {
    let cfg = SimConfig::nrf91(serial, faults).unwrap().with_link_dir(ts.dir.path().join("nrf91"));
    SimDevice::spawn(cfg).unwrap()
}

fn link(h: &SimHandle) -> String {
    h.link_path().unwrap().display().to_string()
}

fn der_of_pem(pem_text: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text).unwrap().into_iter().map(|p| p.contents().to_vec()).collect()
}

#[test]
fn an_nrf91_modem_is_provisioned_over_at_commands_with_its_attestation_recorded() {
    let ts = station();
    let st = ts.open();
    // URC noise between answers and a slow KEYGEN, as a real modem.
    let mut cfg = SimConfig::nrf91("NRF-HAPPY", "urc-noise").unwrap().with_link_dir(ts.dir.path().join("nrf91"));
    cfg.keygen_ms = 1500;
    let dev = SimDevice::spawn(cfg).unwrap();
    let snap = dev.modem().unwrap();
    let r = st.provision(&link(&dev), None).unwrap();
    let Outcome::Passed { identity, cert_serial_hex, .. } = &r.outcome else { panic!("{:?}", r.outcome) };
    assert_eq!(identity.serial, snap.imei, "the serial is the modem's IMEI (AT+CGSN=1)");
    assert_eq!(identity.fw_hash, imprint_devsim::nrf91::FW_BUILD_UUID, "the firmware build UUID (AT%XMODEMUUID)");
    assert_eq!(identity.fw_version, imprint_devsim::nrf91::FW_VERSION);

    // The modem holds, in its sec_tag, the certificate and chain the store recorded, and the key.
    let after = dev.modem().unwrap();
    let row = st.store().attempt(&r.attempt_id).unwrap().unwrap();
    let cert = st.store().cert_by_id(row.certificate_id.as_deref().unwrap()).unwrap().unwrap();
    assert_eq!(&cert.serial_hex, cert_serial_hex);
    let on_modem = der_of_pem(&after.credentials[&(TAG, 1)]);
    assert_eq!(on_modem, vec![cert.cert_der.clone().unwrap()]);
    let chain = der_of_pem(&after.credentials[&(TAG, 0)]);
    assert_eq!(chain.concat(), cert.chain_der.clone().unwrap());
    assert_eq!(after.credentials[&(TAG, 2)], cert.spki_der, "the certificate is for the key the modem made");
    openssl_verify(&on_modem[0], &split_der_chain(&chain.concat())).unwrap();
    assert_eq!(after.cfun, 4, "credentials were written with the modem offline");

    // The record: the dialect and why, the attestation (verifiable by whoever holds
    // the modem's identity key: here the simulator's), URCs kept as console lines.
    let steps = st.store().steps(&r.attempt_id).unwrap();
    assert!(steps.iter().any(|s| s.kind == "info" && s.detail.starts_with("dialect nrf91 ([[dialects]] rule port ")), "{steps:#?}");
    let att = steps.iter().find(|s| s.kind == "attestation").expect("the attestation is recorded");
    assert!(att.detail.starts_with(&format!("nrf91-keygen-cose-sign1 device {} ", after.device_uuid)), "{}", att.detail);
    let cose_b64 = att.detail.rsplit(' ').next().unwrap();
    let cose = base64_url(cose_b64);
    let csr_sha = att.detail.split("csr_sha256 ").nth(1).unwrap().split(' ').next().unwrap();
    assert_eq!(csr_sha.len(), 64);
    use coset::TaggedCborSerializable;
    let sign1 = coset::CoseSign1::from_tagged_slice(&cose).unwrap();
    let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, after.identity_public_key.clone());
    pk.verify(&sign1.tbs_data(b""), &sign1.signature).expect("the recorded attestation verifies with the modem's identity key");
    assert!(steps.iter().any(|s| s.kind == "console" && s.detail.contains("+CEREG")), "URCs are console lines: {steps:#?}");
    for stage in ["hello", "identify", "keygen", "lookup", "issue", "write_chain", "write_cert", "read_back"] {
        assert!(steps.iter().any(|s| s.stage == stage), "no step for {stage}: {steps:#?}");
    }
    assert!(steps.iter().any(|s| s.detail.contains("no proof of possession")), "what the nRF91 lacks is on the record");
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}

#[test]
fn a_read_back_mismatch_and_a_cose_signature_not_covering_the_csr_are_failures_with_their_codes() {
    let ts = station();
    let st = ts.open();
    let cases = [
        ("NRF-RB", "readback-mismatch", "read_back_mismatch", "read_back", true),
        ("NRF-COSE", "cose-other-csr", "attestation_mismatch", "keygen", false),
        ("NRF-NOCOSE", "no-cose", "attestation_invalid", "keygen", false),
        ("NRF-ONLINE", "stays-online", "modem_active", "keygen", false),
    ];
    let devs: Vec<_> = cases.iter().map(|(s, f, ..)| modem(&ts, s, f)).collect();
    let results = st.provision_all(&devs.iter().map(link).collect::<Vec<_>>(), None);
    for ((serial, fault, code, stage, issued), r) in cases.iter().zip(results) {
        let r = r.unwrap();
        let Outcome::Failed(f) = &r.outcome else { panic!("{fault}: passed") };
        assert_eq!((f.code.as_str(), f.stage.as_str()), (*code, *stage), "{fault}: {f:?}");
        assert!(!f.hint.is_empty() && !f.reason.is_empty());
        let row = st.store().attempt(&r.attempt_id).unwrap().unwrap();
        assert_eq!(row.code.as_ref().map(|c| c.as_str()), Some(*code), "{serial}");
        let certs = st.store().certs_by_device_serial(row.device_serial.as_deref().unwrap()).unwrap();
        assert_eq!(!certs.is_empty(), *issued, "{fault}: a CSR whose attestation fails gets no certificate: {certs:?}");
    }
}

#[test]
fn a_cme_error_at_each_step_fails_with_its_code_stage_and_hint() {
    let ts = station();
    let st = ts.open();
    // (command number, +CME ERROR, code, stage, certificate issued before it)
    let cases = [
        (1, 514, "modem_not_allowed", "hello", false),
        (2, 514, "modem_not_allowed", "identify", false),
        (3, 520, "modem_error", "identify", false),
        (4, 514, "modem_not_allowed", "identify", false),
        (5, 514, "modem_not_allowed", "identify", false),
        (6, 528, "modem_power_off_warning", "keygen", false),
        (7, 523, "modem_keygen_failed", "keygen", false),
        (8, 518, "modem_active", "write_chain", true),
        (9, 515, "modem_memory_full", "write_cert", true),
        (10, 513, "modem_error", "read_back", true),
    ];
    let devs: Vec<_> = cases.iter().map(|(k, n, ..)| modem(&ts, &format!("NRF-CME-{k}"), &format!("cme-at={k}:{n}"))).collect();
    let errs = [modem(&ts, "NRF-ERR", "error-at=7")];
    let results = st.provision_all(&devs.iter().chain(&errs).map(link).collect::<Vec<_>>(), None);
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        let Outcome::Failed(f) = &r.outcome else { panic!("{i}: passed") };
        let (k, n, code, stage, issued) = cases.get(i).copied().unwrap_or((7, 0, "modem_error", "keygen", false));
        assert_eq!((f.code.as_str(), f.stage.as_str()), (code, stage), "command {k} +CME ERROR {n}: {f:?}");
        if n != 0 {
            assert!(f.reason.contains(&format!("+CME ERROR: {n}")), "{f:?}");
        }
        assert_eq!(f.hint, f.code.hint());
        let row = st.store().attempt(&r.attempt_id).unwrap().unwrap();
        assert_eq!(row.status.as_str(), "failed");
        let serial = row.device_serial.clone().unwrap_or_default();
        let certs = if serial.is_empty() { vec![] } else { st.store().certs_by_device_serial(&serial).unwrap() };
        assert_eq!(!certs.is_empty(), issued, "command {k}: {certs:?}");
    }
}

#[test]
fn an_nrf91_unplugged_mid_write_is_recorded_and_is_re_provisioned_under_a_rework_authorisation() {
    let ts = station();
    let st = ts.open();
    let dev = modem(&ts, "NRF-UNPLUG", "unplug-at=9");
    let first = st.provision(&link(&dev), None).unwrap();
    let Outcome::Failed(f) = &first.outcome else { panic!("{:?}", first.outcome) };
    assert_eq!((f.code.as_str(), f.stage.as_str()), ("unplugged", "write_cert"), "{f:?}");
    assert!(f.reason.contains("rework"), "the reason says what re-attaching needs: {f:?}");
    let imei = dev.modem().unwrap().imei;
    let old = st.store().certs_by_device_serial(&imei).unwrap();
    assert_eq!(old.len(), 1);

    // Re-attached: the modem makes a new key (it never discloses an existing
    // one), and the serial's certificate for the old key refuses a second.
    dev.replug().unwrap();
    let again = st.provision(&link(&dev), None).unwrap();
    let Outcome::Failed(f) = &again.outcome else { panic!("{:?}", again.outcome) };
    assert_eq!(f.code.as_str(), "duplicate_serial", "{f:?}");

    // Under a supervisor's rework authorisation it is provisioned and the old certificate superseded.
    st.store().authorise_rework(&imei, Some("supervisor"), Some("unplugged mid-write"), "2999-01-01T00:00:00.000Z").unwrap();
    let third = st.provision(&link(&dev), None).unwrap();
    assert!(matches!(third.outcome, Outcome::Passed { .. }), "{:?}", third.outcome);
    let certs = st.store().certs_by_device_serial(&imei).unwrap();
    assert_eq!(certs.len(), 2);
    assert!(certs.iter().any(|c| c.id == old[0].id && c.status.as_str() != "issued"), "{certs:?}");
}

#[test]
fn mixed_dialects_on_one_bench_are_each_provisioned_in_their_own() {
    let ts = station();
    let st = ts.open();
    let nrf: Vec<_> = (1..=3).map(|i| modem(&ts, &format!("NRF-MIX-{i}"), if i == 2 { "urc-noise" } else { "" })).collect();
    let native: Vec<_> = (1..=3).map(|i| imprint_tests::station::sim(&format!("MIX-{i:04}"), "")).collect();
    let ports: Vec<String> = nrf.iter().map(link).chain(native.iter().map(path_of)).collect();
    let results = st.provision_all(&ports, None);
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        assert!(matches!(r.outcome, Outcome::Passed { .. }), "{i}: {:?}", r.outcome);
        let steps = st.store().steps(&r.attempt_id).unwrap();
        let want = if i < 3 { "dialect nrf91" } else { "dialect imprint" };
        assert!(steps.iter().any(|s| s.detail.starts_with(want)), "{i}: {steps:#?}");
    }
    for d in &native {
        assert!(d.snapshot().locked, "native boards are locked as before");
    }
    for d in &nrf {
        assert!(d.modem().unwrap().credentials.contains_key(&(TAG, 1)));
    }
}
