//! Prometheus metrics: one registry per station (prometheus-client), counted
//! where things happen (the driver, the signer worker, backups) and the
//! store's facts (backlog, lag, quarantine, MQTT queue, size) read at scrape
//! time; served by a small HTTP listener ([`MetricsServer`], tiny_http) when
//! `[metrics] listen` is set. Names follow the Prometheus conventions
//! (`_total`, `_seconds`, `_bytes`), all prefixed `imprint_`.
//!
//! Labels are closed sets only (result, stage, failure code, signer backend,
//! status): never a device serial or anything a device sends, so the series
//! count stays bounded.

use imprint_proto::session::Stage;
use imprint_proto::FailureCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The OpenMetrics exposition's content type (served when the scraper asks
/// for it, as Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type (served otherwise: `curl`,
/// `promtool check metrics`).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text (what prometheus-client writes) as Prometheus text
/// format 0.0.4: no `# UNIT` and `# EOF` lines, and a counter family named
/// as its samples are (`x_total`), which is how 0.0.4 parsers (promtool's)
/// match samples to their HELP and TYPE.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.contains(' '))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultCode {
    /// `passed` or `failed`.
    result: &'static str,
    /// The failure code (`none` for a pass).
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Backend {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendCode {
    backend: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn attempt_histogram() -> Histogram {
    // 0.25 s .. ~4.5 min: a whole device.
    Histogram::new(exponential_buckets(0.25, 2.0, 11))
}

fn stage_histogram() -> Histogram {
    // 1 ms .. ~33 s: one stage.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn signer_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: one signature (dev key, HSM, KMS).
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// A signer backend as a label: the closed set of URI schemes.
fn backend(kind: &str) -> &'static str {
    match kind {
        "pkcs11" => "pkcs11",
        "awskms" => "awskms",
        "dev" => "dev",
        _ => "unknown",
    }
}

/// The station's metrics. Cheap to clone (every metric is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    provisionings: Family<ResultCode, Counter>,
    attempt_seconds: Histograms<ResultLabel>,
    stage_seconds: Histograms<StageLabel>,
    signer_seconds: Histograms<Backend>,
    signer_errors: Family<BackendCode, Counter>,
    backups: Family<ResultLabel, Counter>,
    last_backup: Gauge<f64, AtomicU64>,
    attempts_stored: Family<StatusLabel, Gauge>,
    sync_backlog: Gauge,
    sync_lag: Gauge<f64, AtomicU64>,
    quarantined: Gauge,
    mqtt_queued: Gauge,
    store_bytes: Gauge,
    ports_attached: Gauge,
    signer_queue: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix("imprint"))),
            provisionings: Family::default(),
            attempt_seconds: Family::new_with_constructor(attempt_histogram),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            signer_seconds: Family::new_with_constructor(signer_histogram),
            signer_errors: Family::default(),
            backups: Family::default(),
            last_backup: Gauge::default(),
            attempts_stored: Family::default(),
            sync_backlog: Gauge::default(),
            sync_lag: Gauge::default(),
            quarantined: Gauge::default(),
            mqtt_queued: Gauge::default(),
            store_bytes: Gauge::default(),
            ports_attached: Gauge::default(),
            signer_queue: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "provisionings",
                "Provisioning attempts finished by this process, by result and failure code (code none for a pass)",
                m.provisionings.clone(),
            );
            r.register_with_unit(
                "provisioning_duration",
                "Duration of one device's attempt, start to recorded end",
                Unit::Seconds,
                m.attempt_seconds.clone(),
            );
            r.register_with_unit("stage_duration", "Time spent in each session stage", Unit::Seconds, m.stage_seconds.clone());
            r.register_with_unit(
                "signer_duration",
                "Latency of one signer call (issue, sign, check), by backend",
                Unit::Seconds,
                m.signer_seconds.clone(),
            );
            r.register("signer_errors", "Signer calls that failed, by backend and error code", m.signer_errors.clone());
            r.register("signer_queued", "Requests waiting for the signer worker", m.signer_queue.clone());
            r.register("backups", "Backups taken by this process, by result", m.backups.clone());
            r.register_with_unit(
                "last_backup_timestamp",
                "Unix time of the last good backup taken by this process (0: none yet)",
                Unit::Seconds,
                m.last_backup.clone(),
            );
            r.register("stored_attempts", "Attempts in the local store, by status (read at scrape time)", m.attempts_stored.clone());
            r.register("sync_backlog_changes", "Record changes not yet at the center", m.sync_backlog.clone());
            r.register_with_unit(
                "sync_lag",
                "Age of the oldest record change not yet at the center (0: none pending)",
                Unit::Seconds,
                m.sync_lag.clone(),
            );
            r.register("quarantined_changes", "Record changes set aside because they conflict with the center", m.quarantined.clone());
            r.register("mqtt_events_queued", "Provisioning events waiting to be published to the broker", m.mqtt_queued.clone());
            r.register_with_unit("store_size", "Size of the local store (database and WAL)", Unit::Bytes, m.store_bytes.clone());
            r.register("ports_attached", "Fixture ports with a tile (attached devices or slots being watched)", m.ports_attached.clone());
        }
        m
    }

    /// One attempt finished: counted by result and code, timed.
    pub fn attempt_finished(&self, failure: Option<FailureCode>, elapsed: Duration) {
        let result = if failure.is_some() { "failed" } else { "passed" };
        let code = failure.map_or("none", |c| c.as_str());
        self.provisionings.get_or_create(&ResultCode { result, code }).inc();
        self.attempt_seconds.get_or_create(&ResultLabel { result }).observe(elapsed.as_secs_f64());
    }

    /// Time spent in one stage of a session.
    pub fn stage_time(&self, stage: Stage, elapsed: Duration) {
        self.stage_seconds.get_or_create(&StageLabel { stage: stage.as_str() }).observe(elapsed.as_secs_f64());
    }

    /// One signer call: its latency, and its error code when it failed.
    pub fn signer_call(&self, kind: &str, elapsed: Duration, error: Option<&'static str>) {
        let backend = backend(kind);
        self.signer_seconds.get_or_create(&Backend { backend }).observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            self.signer_errors.get_or_create(&BackendCode { backend, code }).inc();
        }
    }

    /// A backup ended (`ok`: written and checked).
    pub fn backup_taken(&self, ok: bool) {
        self.backups.get_or_create(&ResultLabel { result: if ok { "ok" } else { "failed" } }).inc();
        if ok {
            let now = time::OffsetDateTime::now_utc();
            self.last_backup.set(now.unix_timestamp_nanos() as f64 / 1e9);
        }
    }

    /// Ports the engine shows a tile for.
    pub fn set_ports_attached(&self, n: usize) {
        self.ports_attached.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_signer_queue(&self, n: usize) {
        self.signer_queue.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The store's facts as of now (called at scrape time).
    pub fn set_store_facts(&self, f: &imprint_store::StoreFacts) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // A status no attempt has any more (running, after they finished) goes away.
        self.attempts_stored.clear();
        for (status, count) in &f.attempts_by_status {
            self.attempts_stored.get_or_create(&StatusLabel { status: status.clone() }).set(n(*count));
        }
        self.sync_backlog.set(n(f.pending_changes));
        self.sync_lag.set(f.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64()));
        self.quarantined.set(n(f.quarantined_changes));
        self.mqtt_queued.set(n(f.mqtt_events_pending));
        self.store_bytes.set(n(f.size_bytes));
    }

    /// The exposition text (OpenMetrics, ending `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }
}

/// The HTTP listener that serves `/metrics` (anything else: 404).
pub struct MetricsServer {
    /// Dropped by [`MetricsServer::stop`]: that closes the listening socket.
    server: Mutex<Option<Arc<tiny_http::Server>>>,
    addr: std::net::SocketAddr,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl MetricsServer {
    /// Listen on `listen` and answer each scrape with `render()` (the
    /// OpenMetrics text), as OpenMetrics when the request's Accept header
    /// asks for it and as Prometheus text 0.0.4 otherwise.
    pub fn spawn(listen: std::net::SocketAddr, render: Box<dyn Fn() -> String + Send>) -> Result<MetricsServer, String> {
        let server = tiny_http::Server::http(listen).map_err(|e| format!("metrics listener on {listen}: {e}"))?;
        let addr = server.server_addr().to_ip().ok_or_else(|| format!("metrics listener on {listen}: not an IP address"))?;
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("imprint-metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let path = req.url().split('?').next().unwrap_or_default().to_string();
                    let resp = if req.method() != &tiny_http::Method::Get {
                        tiny_http::Response::from_string("only GET\n").with_status_code(405)
                    } else if path == "/metrics" {
                        let openmetrics = req
                            .headers()
                            .iter()
                            .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text"));
                        let body = render();
                        let (body, ctype) = if openmetrics { (body, OPENMETRICS) } else { (to_prometheus_text(&body), PROMETHEUS_TEXT) };
                        let mut r = tiny_http::Response::from_string(body);
                        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()) {
                            r = r.with_header(h);
                        }
                        r
                    } else {
                        tiny_http::Response::from_string("not found: scrape /metrics\n").with_status_code(404)
                    };
                    if let Err(e) = req.respond(resp) {
                        tracing::debug!(error = %e, "metrics scrape: the client went away");
                    }
                }
            })
            .map_err(|e| format!("metrics thread: {e}"))?;
        tracing::info!(listen = %addr, "metrics endpoint listening (/metrics)");
        Ok(MetricsServer { server: Mutex::new(Some(server)), addr, thread: Mutex::new(Some(thread)) })
    }

    /// Where it listens (the port the OS chose, for `:0`).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stop serving, join the thread and close the listening socket.
    pub fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = &server {
            s.unblock();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        // The thread's handle is gone with it: this drops the server.
        drop(server);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let m = Metrics::new();
        m.attempt_finished(None, Duration::from_millis(1500));
        m.attempt_finished(Some(FailureCode::Timeout), Duration::from_millis(300));
        m.signer_call("dev", Duration::from_millis(2), None);
        m.signer_call("awskms", Duration::from_millis(20), Some("signer_unavailable"));
        let t = m.encode();
        for want in [
            "imprint_provisionings_total{result=\"passed\",code=\"none\"} 1",
            "imprint_provisionings_total{result=\"failed\",code=\"timeout\"} 1",
            "imprint_provisioning_duration_seconds_count{result=\"passed\"} 1",
            "imprint_signer_errors_total{backend=\"awskms\",code=\"signer_unavailable\"} 1",
            "# TYPE imprint_store_size_bytes gauge",
            "# TYPE imprint_sync_lag_seconds gauge",
        ] {
            assert!(t.contains(want), "{want} missing from\n{t}");
        }
        assert!(t.ends_with("# EOF\n"));
        let p = to_prometheus_text(&t);
        assert!(p.contains("# TYPE imprint_provisionings_total counter\n") && p.contains("# HELP imprint_provisionings_total "), "{p}");
        assert!(p.contains("# TYPE imprint_store_size_bytes gauge\n"));
        assert!(!p.contains("# EOF") && !p.contains("# UNIT"), "{p}");
    }
}
