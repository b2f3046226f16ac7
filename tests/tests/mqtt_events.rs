//! Provisioning events over real Mosquitto: queued durably with the pass,
//! published at QoS 1, marked sent after PUBACK; a broker stopped and
//! restarted in the middle of a run loses nothing. And the station-side
//! check that the broker would accept the issued certificate.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_mqtt::MqttConfig;
use imprint_proto::Outcome;
use imprint_tests::mosquitto::{wait_until, Mosquitto, Pki, Subscriber, SYSTEM_BROKER};
use imprint_tests::station::{path_of, sim, TestStation};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn unique_topic(what: &str) -> String {
    format!("imprint/test/{what}/{}", imprint_store::new_id())
}

/// Events received, deduplicated by event id.
fn events(sub: &Subscriber) -> BTreeMap<String, serde_json::Value> {
    sub.payloads()
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| Some((v.get("event_id")?.as_str()?.to_string(), v)))
        .collect()
}

fn provision_passes(st: &imprint_station::Station, serials: &[String]) {
    let devs: Vec<_> = serials.iter().map(|s| sim(s, "")).collect();
    let ports: Vec<String> = devs.iter().map(path_of).collect();
    for r in st.provision_all(&ports, None) {
        let r = r.unwrap();
        assert!(r.passed(), "{:?}", r.outcome);
    }
}

#[test]
fn each_pass_publishes_one_event_with_a_stable_id_to_the_system_broker() {
    let topic = unique_topic("events");
    let sub = Subscriber::start(1883, &topic, false);
    let mut ts = TestStation::new();
    ts.cfg.batch = Some("WO-7".into());
    ts.cfg.mqtt = Some(MqttConfig { events_topic: topic.clone(), ..MqttConfig::new(SYSTEM_BROKER) });
    let st = ts.open();
    imprint_tests::station::work_order(st.store(), "WO-7", 10);
    let serials: Vec<String> = (1..=2).map(|i| format!("EVT-{i:04}")).collect();
    provision_passes(&st, &serials);

    wait_until(Duration::from_secs(30), "2 events", || events(&sub).len() == 2);
    let got = events(&sub);
    let devices: BTreeSet<&str> = got.values().map(|v| v["device_id"].as_str().unwrap()).collect();
    assert_eq!(devices, serials.iter().map(String::as_str).collect());
    let certs = st.store().certificates().unwrap();
    for (id, v) in &got {
        assert_eq!(v["type"], "device_provisioned");
        assert_eq!((v["station_id"].as_str(), v["batch"].as_str()), (Some("test-station"), Some("WO-7")));
        let cert = certs.iter().find(|c| c.device_serial == v["device_id"].as_str().unwrap()).unwrap();
        assert_eq!(v["certificate_serial"].as_str(), Some(cert.serial_hex.as_str()));
        assert_eq!(v["certificate_sha256"].as_str(), cert.fingerprint_sha256.as_deref());
        assert!(uuid_v7(id), "{id}");
        // The store holds the very same event, marked sent after its PUBACK.
        let attempt = v["attempt_id"].as_str().unwrap();
        wait_until(Duration::from_secs(10), "the event marked sent", || {
            st.store().mqtt_events_of(attempt).unwrap().iter().all(|e| e.state == "sent")
        });
        let stored = st.store().mqtt_events_of(attempt).unwrap();
        assert_eq!((stored.len(), stored[0].id.as_str()), (1, id.as_str()));
    }
}

fn uuid_v7(s: &str) -> bool {
    s.len() == 36 && s.as_bytes()[14] == b'7'
}

#[test]
fn broker_stopped_and_restarted_mid_run_every_event_arrives_after_the_restart() {
    let mut broker = Mosquitto::plain_persistent();
    let topic = unique_topic("restart");
    let sub = Subscriber::start(broker.port, &topic, true);
    let mut ts = TestStation::new();
    ts.cfg.mqtt = Some(MqttConfig { events_topic: topic.clone(), timeout_ms: 2_000, ..MqttConfig::new(&broker.url(false)) });
    let st = ts.open();

    // Broker up: the first devices' events arrive.
    let first: Vec<String> = (1..=2).map(|i| format!("RST-{i:04}")).collect();
    provision_passes(&st, &first);
    wait_until(Duration::from_secs(30), "the first 2 events", || events(&sub).len() == 2);

    // Broker down: provisioning goes on, events queue in the store.
    broker.stop();
    let during: Vec<String> = (3..=6).map(|i| format!("RST-{i:04}")).collect();
    provision_passes(&st, &during);
    let pending = st.store().mqtt_event_counts().unwrap().pending;
    assert_eq!(pending, 4, "events of passes made while the broker was down are queued");
    wait_until(Duration::from_secs(10), "the publisher to notice the broker is down", || {
        st.ctx().events.as_ref().unwrap().status().last_error.is_some()
    });

    // Broker back: everything queued is delivered, and is marked sent.
    broker.restart();
    let last = vec!["RST-0007".to_string()];
    provision_passes(&st, &last);
    wait_until(Duration::from_secs(60), "all 7 events after the restart", || events(&sub).len() == 7);
    wait_until(Duration::from_secs(20), "the queue to drain", || st.store().mqtt_event_counts().unwrap().pending == 0);
    let devices: BTreeSet<String> = events(&sub).values().map(|v| v["device_id"].as_str().unwrap().to_string()).collect();
    let all: BTreeSet<String> = first.iter().chain(&during).chain(&last).cloned().collect();
    assert_eq!(devices, all);
    let raw = sub.payloads().iter().filter(|p| p.starts_with('{')).count();
    assert!(raw >= 7, "QoS 1: at least once ({raw} raw messages for 7 events)");
}

#[test]
fn issued_certificate_is_checked_against_the_brokers_ca_bundle() {
    // The broker trusts the station's own CA: the pass records the check.
    let mut ts = TestStation::new();
    let _ = ts.open(); // creates the development CA
    ts.cfg.mqtt = Some(MqttConfig { ca_bundle: Some(ts.cfg.ca_chain_path()), ..MqttConfig::new(SYSTEM_BROKER) });
    let st = ts.open();
    let dev = sim("CHK-0001", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);
    let steps = st.store().steps(&r.attempt_id).unwrap();
    assert!(steps.iter().any(|s| s.detail.contains("would be accepted by the broker")), "{steps:#?}");
    drop(st);

    // The broker trusts another CA: the device is not written, and the record says why.
    let pki_dir = tempfile::tempdir().unwrap();
    let other = Pki::new(pki_dir.path()).ca("another-ca");
    ts.cfg.mqtt = Some(MqttConfig { ca_bundle: Some(other.cert.clone()), ..MqttConfig::new(SYSTEM_BROKER) });
    let st = ts.open();
    let dev = sim("CHK-0002", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    let Outcome::Failed(f) = &r.outcome else { panic!("{:?}", r.outcome) };
    assert_eq!((f.code.as_str(), f.stage.as_str()), ("cert_untrusted_by_broker", "issue"), "{f:?}");
    let row = st.store().attempt(&r.attempt_id).unwrap().unwrap();
    assert_eq!(row.code.as_ref().map(|c| c.as_str()), Some("cert_untrusted_by_broker"));
    assert!(row.reason.unwrap().contains("broker would refuse"));
    assert!(dev.snapshot().cert_der.is_none(), "nothing written to the device");
}
