//! The `imprint` command as an operator or a script uses it: exit codes,
//! live progress, watch mode, records, CSV export, health.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::{SimConfig, SimDevice};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use std::process::{Command, Output};

fn imprint(ts: &TestStation, args: &[&str]) -> Output {
    Command::new(imprint_bin()).envs(ts.env()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn station_with_simulated_devices_runs_on_embedded_defaults() {
    let ts = TestStation::new();
    let o = imprint(&ts, &["station", "--simulate", "3", "--fault", "2:weak-key", "--max", "3", "--json"]);
    assert_eq!(o.status.code(), Some(1), "one device must fail: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("DEVELOPMENT CA"), "{}", text(&o));
    // One JSON tile per update.
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut finals: Vec<&serde_json::Value> = Vec::new();
    for e in events.iter().filter(|e| e["state"] == "passed" || e["state"] == "failed") {
        if !finals.iter().any(|f| f["attempt_id"] == e["attempt_id"]) {
            finals.push(e);
        }
    }
    assert_eq!(finals.len(), 3, "{events:#?}");
    let failed: Vec<_> = finals.iter().filter(|e| e["state"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["device_serial"], "SIM-0002");
    assert_eq!(failed[0]["code"], "key_not_allowed");
    assert_eq!(failed[0]["retryable"], false);
    assert!(failed[0]["hint"].as_str().unwrap().contains("QA"));
    // Progress was streamed stage by stage, not only the end.
    assert!(events.iter().filter(|e| e["device_serial"] == "SIM-0001").count() > 5);
}

#[test]
fn watch_provisions_what_is_plugged_in_and_records_are_queryable_and_exportable() {
    let ts = TestStation::new();
    let links = ts.dir.path().join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    let devs: Vec<_> = (1..=2).map(|i| SimDevice::spawn(SimConfig::new(format!("WATCH-{i:04}")).with_link_dir(&links)).unwrap()).collect();
    let glob = format!("{}/*", links.display());
    let o = imprint(&ts, &["work-orders", "add", "WO-42", "--product", "sensor", "--quantity", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = imprint(&ts, &["watch", "--glob", &glob, "--max", "2", "--batch", "WO-42"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).matches("PASS").count(), 2, "{}", text(&o));

    let list = json(&imprint(&ts, &["records", "list", "--json"]));
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["status"] == "passed" && r["batch"] == "WO-42"));
    // Ports are the stable links, not /dev/pts/N.
    assert!(rows.iter().all(|r| r["port"].as_str().unwrap().starts_with(links.to_str().unwrap())));

    let show = json(&imprint(&ts, &["records", "show", "WATCH-0001", "--json"]));
    let cert_serial = show["certificate"]["serial_hex"].as_str().unwrap().to_string();
    assert!(show["steps"].as_array().unwrap().len() > 10);
    assert!(show["certificate"]["pem"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    let by_cert = json(&imprint(&ts, &["records", "list", "--cert-serial", &cert_serial, "--json"]));
    assert_eq!(by_cert.as_array().unwrap().len(), 1);
    assert_eq!(by_cert[0]["device_serial"], "WATCH-0001");

    let csv_path = ts.dir.path().join("export.csv");
    let o = imprint(&ts, &["export", "csv", "--out", csv_path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let mut rdr = csv::Reader::from_path(&csv_path).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let recs: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 2);
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert!(recs.iter().any(|r| &r[col("cert_serial")] == cert_serial.as_str()));
    assert!(recs.iter().all(|r| &r[col("status")] == "passed" && &r[col("batch")] == "WO-42"));
    drop(devs);
}

#[test]
fn devices_identifies_without_writing_and_exit_codes_are_clear() {
    let ts = TestStation::new();
    let dev = sim("IDENT-0001", "");
    let o = imprint(&ts, &["devices", "--port", &path_of(&dev)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("IDENT-0001") && text(&o).contains("blank"), "{}", text(&o));
    assert!(dev.snapshot().public_key_spki.is_none(), "identify must not generate a key");

    // Nothing to do: exit 5.
    let o = imprint(&ts, &["provision"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    // A port that does not exist: the attempt is recorded as failed, exit 1.
    let o = imprint(&ts, &["provision", "--port", "/dev/imprint-no-such-port"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("port_missing"), "{}", text(&o));
    // Health as JSON for scripts.
    let h = json(&imprint(&ts, &["health", "--json"]));
    assert_eq!(h["ok"], true, "{h}");
    assert!(h["checks"].to_string().contains("DEVELOPMENT CA"));
}

#[test]
fn a_config_file_with_a_pin_is_refused() {
    let ts = TestStation::new();
    std::fs::write(ts.dir.path().join("station.toml"), "signer = \"pkcs11:token=x?pin-value=4321\"\n").unwrap();
    let o = imprint(&ts, &["health"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("never go in the config file") && !text(&o).contains("4321"), "{}", text(&o));
}

/// Regression: `imprint watch` and `imprint station` never provisioned a
/// device again after it was unplugged and came back (168 of 168 runs),
/// although the hint said provisioning resumes where it stopped.
#[test]
fn watch_and_station_resume_a_device_unplugged_mid_run() {
    // watch: the device comes back on its link after 100 ms (shorter than a poll).
    let ts = TestStation::new();
    let links = ts.dir.path().join("by-id");
    std::fs::create_dir_all(&links).unwrap();
    let _d = SimDevice::spawn(SimConfig::new("BACK-0001").with_link_dir(&links).with_faults("unplug-at=9,replug-after-ms=100").unwrap())
        .unwrap();
    let glob = format!("{}/*", links.display());
    let o = imprint(&ts, &["watch", "--glob", &glob, "--max", "2"]);
    assert_eq!(o.status.code(), Some(0), "the device ends provisioned: {}", text(&o));
    assert!(text(&o).contains("[unplugged]") && text(&o).contains("PASS"), "{}", text(&o));
    let rows = json(&imprint(&ts, &["records", "list", "--json"]));
    let statuses: Vec<_> = rows.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(statuses, ["passed", "failed"], "{rows:#}");

    // station: a simulated device unplugged later in the run (after its certificate was issued).
    let ts = TestStation::new();
    let o = imprint(&ts, &["station", "--simulate", "1", "--fault", "unplug-at=14,replug-after-ms=400", "--max", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let certs = json(&imprint(&ts, &["records", "certs", "--json"]));
    assert_eq!(certs.as_array().unwrap().len(), 1, "resumed with its existing certificate: {certs:#}");
    let rows = json(&imprint(&ts, &["records", "list", "--json"]));
    assert_eq!(rows[0]["status"], "passed");
    assert_eq!(rows[0]["resumed"], true, "{rows:#}");
}

/// Regression: `imprint records show X --json | head -c 3000` panicked with a
/// backtrace on the broken pipe. A reader that goes away ends the command
/// quietly with exit 0, whatever it was printing.
#[test]
fn records_into_a_closed_pipe_end_quietly_with_exit_0() {
    use std::process::Stdio;
    let ts = TestStation::new();
    let o = imprint(&ts, &["station", "--simulate", "1", "--max", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for args in [&["records", "show", "SIM-0001", "--json"][..], &["records", "list", "--json"][..], &["records", "list"][..]] {
        let mut child =
            Command::new(imprint_bin()).envs(ts.env()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // The reader is gone before the command writes anything.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    }
}
