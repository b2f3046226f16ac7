//! One station per data dir, read-only neighbours, and explicit shutdown,
//! against real ptys, SoftHSM through the p11-kit proxy and a private
//! Mosquitto. Every wait is on a condition (attempt rows, steps, messages),
//! never on a duration.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::{SimConfig, SimDevice, SimHandle};
use imprint_mqtt::MqttConfig;
use imprint_station::{LockError, Station, StationError, StepEnd, Worker};
use imprint_store::{AttemptFilter, Store};
use imprint_tests::mosquitto::{wait_until, Mosquitto, Subscriber};
use imprint_tests::station::{imprint_bin, path_of, TestStation};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn imprint(ts: &TestStation, args: &[&str]) -> Output {
    Command::new(imprint_bin()).envs(ts.env()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A device that takes `keygen_ms` to make its key: an attempt sits in KEYGEN
/// that long, so a test can act while it is in flight.
fn slow_keygen(serial: &str, keygen_ms: u64, link_dir: Option<&Path>) -> SimHandle {
    let mut c = SimConfig::new(serial);
    c.keygen_ms = keygen_ms;
    if let Some(d) = link_dir {
        c = c.with_link_dir(d);
    }
    SimDevice::spawn(c).unwrap()
}

/// The attempts as another process sees them (read-only, like the CLI).
fn attempts(ts: &TestStation) -> Vec<imprint_store::AttemptRow> {
    match Store::open_read_only(&ts.cfg.store_path()) {
        Ok(s) => s.attempts(&AttemptFilter::default()).unwrap(),
        Err(_) => Vec::new(),
    }
}

/// Wait until an attempt is running and has sent KEYGEN (it is in flight).
fn wait_in_keygen(ts: &TestStation) -> String {
    let mut id = String::new();
    wait_until(Duration::from_secs(60), "an attempt in KEYGEN", || {
        let Ok(s) = Store::open_read_only(&ts.cfg.store_path()) else { return false };
        for a in s.attempts(&AttemptFilter::default()).unwrap() {
            if a.status.as_str() == "running" && s.steps(&a.id).unwrap().iter().any(|st| st.stage == "keygen") {
                id = a.id;
                return true;
            }
        }
        false
    });
    id
}

/// `imprint` in the background with stderr to a file.
struct Bg {
    child: Child,
    err: PathBuf,
}

impl Bg {
    fn start(ts: &TestStation, args: &[&str]) -> Bg {
        let err = ts.dir.path().join(format!("stderr-{}.txt", imprint_store::new_id()));
        let child = Command::new(imprint_bin())
            .envs(ts.env())
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Bg { child, err }
    }

    fn sigint(&self) {
        let ok = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        (status.code(), self.stderr())
    }
}

/// The shutdown line lists the workers in the order they were joined.
fn assert_dependency_order(stderr: &str) {
    let line = stderr.lines().find(|l| l.contains("stopped cleanly")).unwrap_or_else(|| panic!("no clean shutdown line:\n{stderr}"));
    let order = ["ports joined", "signer joined", "mqtt_publisher", "sync", "store_writer joined"];
    let at: Vec<usize> = order.iter().map(|w| line.find(w).unwrap_or_else(|| panic!("{w} missing in: {line}"))).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "workers out of order: {line}");
}

#[test]
fn health_records_and_export_beside_a_live_station_change_nothing_and_a_second_station_is_refused() {
    let ts = TestStation::new();
    let st = ts.open();
    let dev = slow_keygen("BESIDE-0001", 6_000, None);
    let port = path_of(&dev);
    let runner = {
        let st = st.clone();
        std::thread::spawn(move || st.provision(&port, None).unwrap())
    };
    let id = wait_in_keygen(&ts);

    // Everything a technician runs beside the station reads, and says so.
    let h = imprint(&ts, &["health", "--json"]);
    assert!(h.status.success(), "{}", text(&h));
    let hj: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    let store_detail = hj["checks"].as_array().unwrap().iter().find(|c| c["id"] == "local_store").unwrap()["detail"].to_string();
    assert!(store_detail.contains("in use by a running station") && store_detail.contains(&std::process::id().to_string()), "{hj:#}");
    let list = imprint(&ts, &["records", "list", "--json"]);
    assert!(list.status.success(), "{}", text(&list));
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["status"], "running", "records ran while the attempt was in flight");
    for args in [
        vec!["records", "show", id.as_str(), "--json"],
        vec!["records", "certs"],
        vec!["export", "csv"],
        vec!["report", "--json"],
        vec!["sync", "status", "--json"],
    ] {
        let o = imprint(&ts, &args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }

    // A second station on the same data dir is refused, saying who holds it.
    let o = imprint(&ts, &["provision", "--port", "/dev/imprint-no-such-port"]);
    assert_eq!(o.status.code(), Some(4), "exit 4: the local store (data dir) is in use: {}", text(&o));
    assert!(text(&o).contains("[store_locked]"), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("another station is running") && t.contains(&format!("pid {}", std::process::id())) && t.contains("--data-dir"),
        "{t}"
    );
    match Station::open(ts.cfg.clone(), None) {
        Err(StationError::Lock(LockError::InUse { holder: Some(h), .. })) => assert_eq!(h.pid, std::process::id()),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second station opened on the same data dir"),
    }

    // The live attempt was left alone and passes cleanly: no stale code.
    let r = runner.join().unwrap();
    assert!(r.passed(), "{:?}", r.outcome);
    let row = st.store().attempt(&id).unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.code.as_ref().map(|c| c.as_str()), row.reason.as_deref()), ("passed", None, None), "{row:?}");
    assert!(st.store().steps(&id).unwrap().iter().all(|s| !s.detail.contains("interrupted")));

    // Stopped, the data dir is free again.
    let report = st.shutdown(Duration::from_secs(20));
    assert!(report.clean(), "{report}");
    let o = imprint(&ts, &["provision", "--port", "/dev/imprint-no-such-port"]);
    assert_eq!(o.status.code(), Some(1), "the station opened and recorded the missing port: {}", text(&o));
    assert!(text(&o).contains("port_missing"), "{}", text(&o));
}

#[test]
fn sigint_to_watch_stops_the_attempt_in_flight_at_a_safe_point_joins_in_order_and_exits_0() {
    let ts = TestStation::new();
    let links = ts.dir.path().join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    let dev = slow_keygen("STOP-0001", 4_000, Some(&links));
    let glob = format!("{}/*", links.display());
    let watch = Bg::start(&ts, &["watch", "--glob", &glob]);
    let id = wait_in_keygen(&ts);
    watch.sigint();
    let (code, err) = watch.wait();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("stopping") && err.contains("Ctrl-C again"), "the operator is told what happens: {err}");
    assert_dependency_order(&err);
    assert!(err.contains("1 attempts stopped at a safe point"), "{err}");

    let rows = attempts(&ts);
    assert!(rows.iter().all(|a| a.status.as_str() != "running"), "{rows:#?}");
    let a = rows.iter().find(|a| a.id == id).unwrap();
    assert_eq!((a.status.as_str(), a.code.as_ref().map(|c| c.as_str())), ("failed", Some("station_stopping")), "{a:?}");
    assert!(a.hint.as_deref().unwrap().contains("resumes where it stopped"), "{a:?}");

    // The next run provisions the device to the end.
    let o = imprint(&ts, &["watch", "--glob", &glob, "--max", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dev.snapshot().cert_der.is_some(), "the device got its certificate");
    let rows = attempts(&ts);
    assert!(rows.iter().any(|a| a.status.as_str() == "passed" && a.code.is_none()), "{rows:#?}");
}

#[test]
fn sigint_to_station_with_simulated_devices_leaves_no_attempt_running() {
    let ts = TestStation::new();
    let station = Bg::start(&ts, &["station", "--simulate", "3", "--fault", "slow-ms=150"]);
    wait_until(Duration::from_secs(60), "attempts in flight", || {
        attempts(&ts).iter().filter(|a| a.status.as_str() == "running").count() >= 2
    });
    station.sigint();
    let (code, err) = station.wait();
    assert_eq!(code, Some(0), "{err}");
    assert_dependency_order(&err);
    let rows = attempts(&ts);
    assert!(!rows.is_empty() && rows.iter().all(|a| a.status.as_str() != "running"), "{rows:#?}");
    assert!(
        rows.iter().all(|a| a.status.as_str() == "passed" || a.code.as_ref().map(|c| c.as_str()) == Some("station_stopping")),
        "{rows:#?}"
    );
}

#[test]
fn a_second_sigint_aborts_at_once_and_the_next_station_recovers() {
    let ts = TestStation::new();
    let links = ts.dir.path().join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    let _dev = slow_keygen("ABORT-0001", 9_000, Some(&links));
    let watch = Bg::start(&ts, &["watch", "--glob", &format!("{}/*", links.display())]);
    let id = wait_in_keygen(&ts);
    watch.sigint();
    wait_until(Duration::from_secs(30), "the first Ctrl-C to be taken", || watch.stderr().contains("Ctrl-C again"));
    watch.sigint();
    let (code, err) = watch.wait();
    assert_eq!(code, Some(130), "aborted at once: {err}");
    assert!(!err.contains("stopped cleanly"), "{err}");
    // Cut, not drained: the attempt is still recorded as running ...
    assert_eq!(attempts(&ts).iter().find(|a| a.id == id).unwrap().status.as_str(), "running");
    // ... a read-only health does not touch it ...
    assert!(imprint(&ts, &["health"]).status.success());
    assert_eq!(attempts(&ts).iter().find(|a| a.id == id).unwrap().status.as_str(), "running");
    // ... and the next station's recovery marks it interrupted.
    let o = imprint(&ts, &["provision", "--port", "/dev/imprint-no-such-port"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(attempts(&ts).iter().find(|a| a.id == id).unwrap().status.as_str(), "interrupted");
}

#[test]
fn consecutive_provision_runs_with_softhsm_through_the_p11_kit_proxy_all_exit_0() {
    // CI: 20 runs; the long run (docs/reliability.md) sets IMPRINT_P11_RUNS=1000.
    let runs: u32 = std::env::var("IMPRINT_P11_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/p11-loop");
    let bin_dir = imprint_bin().parent().unwrap().to_path_buf();
    let o = Command::new(&script).arg(runs.to_string()).arg(&bin_dir).arg("provision").output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains(&format!("runs={runs} failed=0")), "{t}");
}

/// Events received by a subscriber: event id -> how many times.
fn deliveries(sub: &Subscriber) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in sub.payloads() {
        if let Some(id) = serde_json::from_str::<serde_json::Value>(&p).ok().and_then(|v| v.get("event_id")?.as_str().map(str::to_string)) {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

#[test]
fn across_20_cli_runs_each_provisioning_event_is_delivered_exactly_once() {
    let broker = Mosquitto::plain_persistent();
    let topic = format!("imprint/test/once/{}", imprint_store::new_id());
    let sub = Subscriber::start(broker.port, &topic, true);
    let ts = TestStation::new();
    std::fs::write(
        ts.dir.path().join("station.toml"),
        format!("port_globs = []\nstation_id = \"test-station\"\n\n[mqtt]\nurl = \"{}\"\nevents_topic = \"{topic}\"\n", broker.url(false)),
    )
    .unwrap();
    let runs = 20;
    for i in 1..=runs {
        let dev = imprint_tests::station::sim(&format!("ONCE-{i:04}"), "");
        let o = imprint(&ts, &["provision", "--port", &path_of(&dev)]);
        assert!(o.status.success(), "run {i}: {}", text(&o));
        let logs = std::fs::read_dir(ts.cfg.log_dir())
            .map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect::<String>());
        let logs = logs.unwrap_or_default();
        assert!(!logs.contains("could not be marked sent") && !text(&o).contains("could not be marked sent"), "run {i}");
    }
    // Everything published before this marker has reached the subscriber.
    let marker = format!("all-runs-done-{}", imprint_store::new_id());
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", &topic, "-q", "1", "-m", &marker])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_until(Duration::from_secs(30), "the marker", || sub.payloads().contains(&marker));
    let got = deliveries(&sub);
    assert_eq!(got.len(), runs, "{got:?}");
    assert!(got.values().all(|n| *n == 1), "each event exactly once: {got:?}");
    let store = Store::open_read_only(&ts.cfg.store_path()).unwrap();
    let c = store.mqtt_event_counts().unwrap();
    assert_eq!((c.pending, c.sent), (0, runs as i64));
}

#[test]
fn events_queued_while_the_broker_was_down_are_retried_within_the_bounded_drain() {
    let mut broker = Mosquitto::plain_persistent();
    let topic = format!("imprint/test/drain/{}", imprint_store::new_id());
    let sub = Subscriber::start(broker.port, &topic, true);
    let mut ts = TestStation::new();
    ts.cfg.mqtt = Some(MqttConfig { events_topic: topic.clone(), timeout_ms: 1_000, ..MqttConfig::new(&broker.url(false)) });
    let st = ts.open();
    broker.stop();
    let dev = imprint_tests::station::sim("DRAIN-0001", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);
    wait_until(Duration::from_secs(30), "the publisher to find the broker down", || {
        st.ctx().events.as_ref().unwrap().status().last_error.is_some()
    });
    let tries = || st.store().mqtt_events_of(&r.attempt_id).unwrap()[0].tries;
    let before = tries();

    // Stop while the broker is down: the drain keeps retrying ...
    let stopping = {
        let st = st.clone();
        std::thread::spawn(move || st.shutdown(Duration::from_secs(30)))
    };
    wait_until(Duration::from_secs(30), "a retry during the drain", || tries() > before);
    // ... and the broker comes back before the deadline.
    broker.restart();
    let report = stopping.join().unwrap();
    assert!(report.clean(), "{report}");
    assert_eq!((report.events_sent, report.events_left), (1, 0), "{report}");
    let order: Vec<Worker> = report.steps.iter().map(|s| s.worker).collect();
    assert_eq!(order, [Worker::Ports, Worker::Signer, Worker::MqttPublisher, Worker::Sync, Worker::StoreWriter]);
    assert_eq!(report.steps[2].end, StepEnd::Joined);
    wait_until(Duration::from_secs(30), "the event at the subscriber", || deliveries(&sub).len() == 1);
    let store = Store::open_read_only(&ts.cfg.store_path()).unwrap();
    assert_eq!(store.mqtt_events_of(&r.attempt_id).unwrap()[0].state, "sent");
}
