//! Broker health check against real Mosquitto: the machine's plain broker on
//! 127.0.0.1:1883, and private brokers with TLS and `require_certificate
//! true`. Each failure class is distinct.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_mqtt::{check, Endpoint, MqttConfig, MqttError, Protocol};
use imprint_tests::mosquitto::{free_port, BrokerTls, CertFiles, Mosquitto, Pki, SYSTEM_BROKER};
use std::time::Duration;

fn endpoint(cfg: &MqttConfig) -> Endpoint {
    Endpoint::from_config(cfg, "").unwrap()
}

struct TlsSetup {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    /// CA of the broker's server certificate.
    server_ca: CertFiles,
    /// CA the broker trusts for clients.
    client_ca: CertFiles,
    /// A client certificate from `client_ca`.
    client: CertFiles,
    pki: Pki,
}

fn tls_setup() -> TlsSetup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server_ca = pki.ca("broker-ca");
    let server = pki.leaf(&server_ca, "broker", true);
    let client_ca = pki.ca("station-ca");
    let client = pki.leaf(&client_ca, "station", false);
    let broker = Mosquitto::mtls(&BrokerTls { client_ca: client_ca.cert.clone(), server });
    TlsSetup { _dir: dir, broker, server_ca, client_ca, client, pki }
}

fn mtls_config(s: &TlsSetup, client: &CertFiles, protocol: Protocol) -> MqttConfig {
    MqttConfig {
        ca_bundle: Some(s.client_ca.cert.clone()),
        server_ca: Some(s.server_ca.cert.clone()),
        client_cert: Some(client.cert.clone()),
        client_key: Some(client.key.clone()),
        protocol,
        ..MqttConfig::new(&s.broker.url(true))
    }
}

#[test]
fn plain_system_broker_round_trips_over_mqtt_3_1_1_and_5() {
    for protocol in [Protocol::V311, Protocol::V5] {
        let cfg = MqttConfig { protocol, ..MqttConfig::new(SYSTEM_BROKER) };
        cfg.validate().unwrap();
        let r = check(&endpoint(&cfg), "imprint/test/health").unwrap_or_else(|e| panic!("{protocol:?}: {e}"));
        assert_eq!((r.transport, r.protocol), ("tcp", protocol));
        assert!(r.round_trip < Duration::from_secs(5), "{r:?}");
    }
}

#[test]
fn mtls_broker_accepts_the_station_certificate_over_both_protocols() {
    let s = tls_setup();
    for protocol in [Protocol::V311, Protocol::V5] {
        let cfg = mtls_config(&s, &s.client, protocol);
        cfg.validate().unwrap();
        let r = check(&endpoint(&cfg), "imprint/health").unwrap_or_else(|e| panic!("{protocol:?}: {e}\n{}", s.broker.log()));
        assert_eq!(r.transport, "mtls");
    }
}

#[test]
fn broker_certificate_from_an_unknown_ca_is_a_tls_verification_failure() {
    let s = tls_setup();
    let other = s.pki.ca("not-the-broker-ca");
    let cfg = MqttConfig { server_ca: Some(other.cert.clone()), ..mtls_config(&s, &s.client, Protocol::V311) };
    let e = check(&endpoint(&cfg), "imprint/health").unwrap_err();
    assert!(matches!(e, MqttError::TlsVerification(_)), "{e:?}");
    assert_eq!(e.code(), "tls_verification");
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let s = tls_setup();
    let rogue_ca = s.pki.ca("rogue-ca");
    let rogue = s.pki.leaf(&rogue_ca, "rogue-station", false);
    for protocol in [Protocol::V311, Protocol::V5] {
        let e = check(&endpoint(&mtls_config(&s, &rogue, protocol)), "imprint/health").unwrap_err();
        assert!(matches!(e, MqttError::Refused(_)), "{protocol:?}: {e:?}");
    }
}

#[test]
fn client_without_a_certificate_is_refused_by_require_certificate() {
    let s = tls_setup();
    let cfg = MqttConfig { client_cert: None, client_key: None, ..mtls_config(&s, &s.client, Protocol::V311) };
    let e = check(&endpoint(&cfg), "imprint/health").unwrap_err();
    assert!(matches!(e, MqttError::Refused(_)), "{e:?}");
}

#[test]
fn client_key_that_does_not_match_its_certificate_is_refused() {
    let s = tls_setup();
    let other = s.pki.leaf(&s.client_ca, "other-station", false);
    let mixed = CertFiles { cert: s.client.cert.clone(), key: other.key.clone() };
    let e = check(&endpoint(&mtls_config(&s, &mixed, Protocol::V311)), "imprint/health").unwrap_err();
    assert!(matches!(e, MqttError::Refused(_)), "{e:?}");
}

#[test]
fn nothing_listening_is_unreachable() {
    let cfg = MqttConfig::new(&format!("mqtt://127.0.0.1:{}", free_port()));
    let e = check(&endpoint(&cfg), "imprint/health").unwrap_err();
    assert!(matches!(e, MqttError::Unreachable(_)), "{e:?}");
    assert_eq!(e.code(), "unreachable");
}

#[test]
fn a_listener_that_never_answers_times_out() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let cfg = MqttConfig { timeout_ms: 700, ..MqttConfig::new(&format!("mqtt://127.0.0.1:{port}")) };
    let t = std::time::Instant::now();
    let e = check(&endpoint(&cfg), "imprint/health").unwrap_err();
    assert!(matches!(e, MqttError::Timeout(_)), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    held.join().unwrap();
}

#[test]
fn station_health_shows_the_broker_round_trip_or_why_it_failed() {
    use imprint_station::health::{check as health, Level};
    let mut ts = imprint_tests::station::TestStation::new();
    let off = health(&ts.open());
    let mqtt = off.iter().find(|i| i.id == "mqtt").unwrap();
    assert_eq!((mqtt.level, mqtt.detail.as_str()), (Level::Off, "not configured"));

    ts.cfg.mqtt = Some(MqttConfig::new(SYSTEM_BROKER));
    let items = health(&ts.open());
    let mqtt = items.iter().find(|i| i.id == "mqtt").unwrap();
    assert_eq!(mqtt.level, Level::Ok, "{mqtt:?}");
    assert!(mqtt.detail.contains("round trip") && mqtt.detail.contains("tcp"), "{mqtt:?}");

    ts.cfg.mqtt = Some(MqttConfig::new(&format!("mqtt://127.0.0.1:{}", free_port())));
    let items = health(&ts.open());
    let mqtt = items.iter().find(|i| i.id == "mqtt").unwrap();
    assert_eq!(mqtt.level, Level::Error, "{mqtt:?}");
    assert!(mqtt.detail.contains("unreachable") && mqtt.last_error.as_deref().unwrap_or("").contains("unreachable"), "{mqtt:?}");
}
