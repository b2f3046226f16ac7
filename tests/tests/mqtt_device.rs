//! The device connectivity check (protocol verb CONNECT) against a real
//! Mosquitto with TLS, `require_certificate true` and the station's CA as
//! its `cafile`: a provisioned simulated device connects over mTLS with its
//! own key and new certificate; a certificate from another CA, an expired
//! one, or a key that does not match is refused, and the station records why.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_mqtt::MqttConfig;
use imprint_proto::Outcome;
use imprint_tests::mosquitto::{BrokerTls, Mosquitto, Pki};
use imprint_tests::station::{path_of, sim, TestStation};

struct Setup {
    ts: TestStation,
    broker: Mosquitto,
    _pki: tempfile::TempDir,
}

fn setup() -> Setup {
    let mut ts = TestStation::new();
    drop(ts.open()); // creates the development CA
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let server_ca = pki.ca("broker-ca");
    let server = pki.leaf(&server_ca, "broker", true);
    // The broker trusts the station's CA for clients, plus the simulator's
    // expiry-test CA so that an expired certificate chains and is refused
    // for being expired.
    let cafile = pki_dir.path().join("clients-ca.pem");
    let mut trusted = std::fs::read_to_string(ts.cfg.ca_chain_path()).unwrap();
    trusted.push_str(&imprint_devsim::mqtt::expiry_test_ca_pem().unwrap());
    std::fs::write(&cafile, trusted).unwrap();
    let broker = Mosquitto::mtls(&BrokerTls { client_ca: cafile, server });
    ts.cfg.mqtt = Some(MqttConfig {
        ca_bundle: Some(ts.cfg.ca_chain_path()),
        server_ca: Some(server_ca.cert.clone()),
        device_check: true,
        device_topic: format!("imprint/test/devices/{}", imprint_store::new_id()),
        ..MqttConfig::new(&broker.url(true))
    });
    Setup { ts, broker, _pki: pki_dir }
}

#[test]
fn provisioned_device_connects_to_the_mtls_broker_with_its_new_certificate() {
    let s = setup();
    let st = s.ts.open();
    let dev = sim("MQ-0001", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    assert!(r.passed(), "{:?}\n{}", r.outcome, s.broker.log());
    assert!(dev.snapshot().locked, "locked after the check");
    let steps = st.store().steps(&r.attempt_id).unwrap();
    assert!(steps.iter().any(|s| s.stage == "connect" && s.detail.starts_with("brokerca committed")), "{steps:#?}");
    let connect = steps
        .iter()
        .find(|s| s.stage == "connect" && s.kind == "completed" && s.detail.contains("over mTLS"))
        .unwrap_or_else(|| panic!("connect step recorded: {steps:#?}"));
    assert!(connect.detail.contains("round trip"), "{connect:?}");
    // The broker saw the device's certificate: its CN is the username.
    assert!(s.broker.log().contains("MQ-0001"), "{}", s.broker.log());
}

#[test]
fn devices_the_broker_refuses_are_recorded_with_the_reason_and_not_locked() {
    let s = setup();
    let st = s.ts.open();
    let cases = [("mqtt-foreign-cert", "UnknownCA"), ("mqtt-expired-cert", "CertificateExpired"), ("mqtt-wrong-key", "DecryptError")];
    let devs: Vec<_> = cases.iter().enumerate().map(|(i, (f, _))| sim(&format!("MQBAD-{:04}", i + 1), f)).collect();
    let ports: Vec<String> = devs.iter().map(path_of).collect();
    for (((fault, alert), r), dev) in cases.iter().zip(st.provision_all(&ports, None)).zip(&devs) {
        let r = r.unwrap();
        let Outcome::Failed(f) = &r.outcome else { panic!("{fault}: passed") };
        assert_eq!((f.stage.as_str(), f.code.as_str(), f.retryable), ("connect", "connect_refused", false), "{fault}: {f:?}");
        assert!(f.reason.contains(alert), "{fault}: {}", f.reason);
        let row = st.store().attempt(&r.attempt_id).unwrap().unwrap();
        assert_eq!((row.status.as_str(), row.code.as_ref().map(|c| c.as_str())), ("failed", Some("connect_refused")));
        assert!(row.reason.unwrap().contains(alert));
        assert!(!dev.snapshot().locked, "{fault}: a refused device is not locked");
        assert!(dev.snapshot().cert_der.is_some(), "{fault}: its certificate is in place for a retry after rework");
    }
}

#[test]
fn qa_verification_asks_the_device_to_connect_with_the_broker_ca_it_kept() {
    let s = setup();
    let st = s.ts.open();
    let dev = sim("MQ-QA-0001", "");
    assert!(st.provision(&path_of(&dev), None).unwrap().passed());
    let before = dev.snapshot();
    let o = st.verify(&path_of(&dev)).unwrap();
    let c = o.checks.iter().find(|c| c.check == imprint_core::qa::QaCheck::MqttConnect).unwrap();
    assert_eq!(c.result, imprint_core::qa::CheckResult::Pass, "{o:#?}\n{}", s.broker.log());
    assert!(c.detail.contains("round trip"), "{}", c.detail);
    assert!(o.passed, "{o:#?}");
    let after = dev.snapshot();
    assert_eq!((after.cert_der, after.chain_der, after.locked), (before.cert_der, before.chain_der, before.locked));
}

#[test]
fn qa_verification_fails_the_mqtt_check_of_a_device_the_broker_refuses() {
    let s = setup();
    let st = s.ts.open();
    // Its CONNECT presents a certificate from another CA: provisioning wrote
    // the broker CA, then set the device aside unlocked (connect_refused).
    let dev = sim("MQ-QA-0002", "mqtt-foreign-cert");
    assert!(!st.provision(&path_of(&dev), None).unwrap().passed());
    let o = st.verify(&path_of(&dev)).unwrap();
    let c = o.checks.iter().find(|c| c.check == imprint_core::qa::QaCheck::MqttConnect).unwrap();
    assert_eq!(c.result, imprint_core::qa::CheckResult::Fail, "{o:#?}");
    assert!(c.detail.contains("refused") && c.detail.contains("UnknownCA"), "{}", c.detail);
    // What QA reads is the station's own certificate: those checks pass.
    for ok in [imprint_core::qa::QaCheck::Chain, imprint_core::qa::QaCheck::StoreRecord, imprint_core::qa::QaCheck::ProofOfPossession] {
        assert_eq!(o.checks.iter().find(|c| c.check == ok).unwrap().result, imprint_core::qa::CheckResult::Pass, "{ok:?}");
    }
    assert!(!o.passed);
}
