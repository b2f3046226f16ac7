//! The Prometheus endpoint of a running station: scraped over HTTP while
//! simulated devices provision, its counters equal to the store, and the
//! exposition accepted by `promtool check metrics` (Debian package
//! `prometheus`, installed by scripts/setup).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::{Api, ApiOptions, Mode, StationConfig};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// GET `path` over plain HTTP/1.0: (status line, content type, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (String, String, String) {
    get_accepting(addr, path, None)
}

fn get_accepting(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_string();
    let ctype = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or_default().to_string();
    (status, ctype, body.to_string())
}

/// `name{labels}` -> value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

fn promtool(text: &str) -> (bool, String) {
    let mut c = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup installs the Debian package prometheus)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn metrics_scraped_while_devices_provision_match_the_store_and_pass_promtool() {
    const N: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StationConfig {
        data_dir: dir.path().join("data"),
        port_globs: vec![],
        station_id: "metrics".into(),
        mode: Mode::Auto,
        ..Default::default()
    };
    cfg.metrics.listen = Some("127.0.0.1:0".into());
    let mut opts = ApiOptions::new(cfg, dir.path().join("station.toml"));
    opts.simulate = N;
    // One board whose CSR carries a weak key: a failure with its code.
    opts.faults = vec![format!("{N}:weak-key")];
    let api = Api::new(opts, Arc::new(|_| {}));
    api.start(None).unwrap();
    let bench = api.bench().unwrap();
    let station = bench.station().clone();
    let addr = station.metrics_addr().expect("the endpoint listens");
    assert!(addr.ip().is_loopback());

    // Scrape while the devices run, as Prometheus does (it asks for OpenMetrics).
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let mut during = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while bench.finished_count() < N && Instant::now() < deadline {
        let (status, ctype, body) = get_accepting(addr, "/metrics", Some(prometheus_accept));
        assert!(status.contains("200"), "{status}");
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        assert!(body.ends_with("# EOF\n"));
        during += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(bench.wait_finished(N, Duration::from_secs(60)), N, "{:?}", bench.tiles());
    assert!(during > 0, "no scrape happened while devices ran");
    assert_eq!(get(addr, "/other").0.split(' ').nth(1), Some("404"));

    // What `curl | promtool check metrics` sees: the Prometheus text format.
    let (_, ctype, text) = get(addr, "/metrics");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let m = samples(&text);
    let facts = station.store().facts().unwrap();
    let stored = |status: &str| facts.attempts_by_status.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n) as f64;
    let passed = m.get("imprint_provisionings_total{result=\"passed\",code=\"none\"}").copied().unwrap_or(0.0);
    let failed: f64 = m.iter().filter(|(k, _)| k.starts_with("imprint_provisionings_total{result=\"failed\"")).map(|(_, v)| v).sum();
    assert_eq!((passed, failed), (stored("passed"), stored("failed")), "counters differ from the store:\n{text}");
    assert_eq!(passed + failed, N as f64, "{text}");
    assert!(failed >= 1.0, "the weak-key board failed with its code:\n{text}");
    assert_eq!(m["imprint_stored_attempts{status=\"passed\"}"], stored("passed"));
    assert_eq!(m["imprint_provisioning_duration_seconds_count{result=\"passed\"}"], passed);
    assert_eq!(m["imprint_stage_duration_seconds_count{stage=\"hello\"}"], N as f64, "{text}");
    assert!(m["imprint_signer_duration_seconds_count{backend=\"dev\"}"] >= passed, "{text}");
    assert_eq!(m["imprint_ports_attached"], N as f64);
    assert!(m["imprint_store_size_bytes"] > 0.0);
    for name in ["imprint_sync_backlog_changes", "imprint_sync_lag_seconds", "imprint_quarantined_changes", "imprint_mqtt_events_queued"] {
        assert!(m.contains_key(name), "{name} missing:\n{text}");
    }
    let (ok, out) = promtool(&text);
    assert!(ok, "promtool check metrics: {out}\n{text}");
    // Every series the Grafana dashboard queries is one the station serves.
    assert!(!m.contains_key("imprint_stored_attempts{status=\"running\"}"), "a status no attempt has stays exported:\n{text}");
    // (Families without a sample are not exported: signer errors, when there were none.)
    for name in dashboard_metric_names().into_iter().filter(|n| n != "imprint_signer_errors_total") {
        // A sample, or the family's TYPE line (a family with no sample yet, such as errors that did not happen).
        let family = name.trim_end_matches("_bucket");
        let served = text.lines().any(|l| l.starts_with(&name) || (l.starts_with("# TYPE ") && l.split(' ').nth(2) == Some(family)));
        assert!(served, "deploy/grafana queries {name}, which the station does not serve:\n{text}");
    }
    api.shutdown();
    assert!(std::net::TcpStream::connect(addr).is_err(), "the endpoint stops with the station");
}

/// The `imprint_*` metric names in the dashboard's queries.
fn dashboard_metric_names() -> std::collections::BTreeSet<String> {
    let dash: serde_json::Value = serde_json::from_str(include_str!("../../deploy/grafana/imprint-station.json")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("imprint_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    names
}

#[test]
fn promtool_rejects_a_broken_exposition() {
    // The check above can fail: promtool refuses a malformed line.
    let (ok, _) = promtool("# TYPE imprint_x counter\nimprint_x_total{a=\"1\" 3\n");
    assert!(!ok);
}
