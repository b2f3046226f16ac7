//! The station: opens the store and the signer, recovers what a previous
//! run left unfinished, and runs one session per port in parallel.

use crate::config::StationConfig;
use crate::driver::{run_attempt, AttemptResult};
use crate::fsutil;
use crate::lock::DataDirLock;
use crate::shutdown::ShutdownToken;
use crate::signer_worker::SignerHandle;
use imprint_core::ca::{self, CaSubject};
use imprint_core::issuance::{self, IssuePlan};
use imprint_core::signer::SignerError;
use imprint_proto::FailureCode;
use imprint_signer::{open_signer, Pin};
use imprint_store::{CertRow, Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a stopping station lets attempts in flight reach a safe point
/// and its workers drain (shown on screen when a stop is asked for).
pub const DRAIN_WITHIN: Duration = Duration::from_secs(20);

/// Live state of one port, for progress displays.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub port: String,
    pub attempt_id: String,
    pub stage: imprint_proto::Stage,
    pub percent: u8,
    pub device_serial: Option<String>,
    pub status: ProgressStatus,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProgressStatus {
    Running,
    /// `resumed`: the certificate was issued earlier and written again;
    /// `recheck`: the device was already provisioned and locked with it
    /// (nothing was written).
    Passed {
        cert_serial: String,
        resumed: bool,
        recheck: bool,
    },
    Failed {
        code: FailureCode,
        reason: String,
        hint: String,
        retryable: bool,
    },
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Why a port in [`Station::provision_all`] has no attempt result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The attempt could not be recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS refused a thread for the port.
    #[error("could not start a thread for port {port}: {reason}")]
    Spawn { port: String, reason: String },
    /// The port's thread stopped on an internal fault outside the attempt
    /// (a fault inside it is recorded as the attempt's `internal_error`).
    #[error("the thread for port {port} stopped on an internal fault: {reason}")]
    Panicked { port: String, reason: String },
}

/// Why the station could not start.
///
/// Each cause is printed once: a variant shows its cause in its message and
/// does not also expose it as `source()` (a chain printer such as anyhow's
/// `{:#}` would print it twice: "CA signer: X: X"). Hence the hand-written
/// `From` impls instead of `#[from]`, which always implies `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StationError {
    #[error(transparent)]
    Store(StoreError),
    #[error("CA signer: {0}")]
    Signer(SignerError),
    #[error("CA certificate: {0}")]
    Ca(ca::CaError),
    /// Another station holds this data dir (one station per data dir).
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("{0}")]
    Setup(String),
}

impl From<StoreError> for StationError {
    fn from(e: StoreError) -> Self {
        StationError::Store(e)
    }
}

impl From<SignerError> for StationError {
    fn from(e: SignerError) -> Self {
        StationError::Signer(e)
    }
}

impl From<ca::CaError> for StationError {
    fn from(e: ca::CaError) -> Self {
        match e {
            // "CA certificate: PIN rejected" would blame the certificate.
            ca::CaError::Signer(s) => StationError::Signer(s),
            other => StationError::Ca(other),
        }
    }
}

impl StationError {
    /// Stable code for exit statuses and IPC.
    pub fn code(&self) -> &'static str {
        match self {
            StationError::Store(_) => "store",
            StationError::Signer(e) => e.code().as_str(),
            StationError::Ca(_) => "ca",
            StationError::Lock(crate::lock::LockError::InUse { .. }) => "data_dir_in_use",
            StationError::Lock(_) => "data_dir_lock",
            StationError::Setup(_) => "setup",
        }
    }
}

/// Everything a session driver needs; shared by all port threads.
pub struct StationCtx {
    pub cfg: StationConfig,
    pub store: Arc<Store>,
    pub signer: SignerHandle,
    /// The CA certificates written to devices after their own (issuing CA first).
    pub chain_der: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
    /// Issuer DN as recorded (RFC 4514 string of the issuing CA's subject).
    pub issuer_dn: String,
    /// When the CA chain is valid (checked at start-up); no certificate
    /// outlives `ca_validity.not_after`.
    pub ca_validity: ca::ChainValidity,
    pub development: bool,
    /// The station's Prometheus metrics (served when `[metrics] listen` is set).
    pub metrics: crate::metrics::Metrics,
    /// Work order / batch recorded on new attempts (set by the operator or a scanner).
    batch: Mutex<Option<String>>,
    /// The signed-in operator new attempts are recorded under (None: nobody
    /// is signed in, and the engine starts no new attempt by itself).
    operator: Mutex<Option<String>>,
    /// Sends queued provisioning events to the broker, when `[mqtt]` is configured.
    pub events: Option<crate::events::EventPublisher>,
    /// Draining once a stop was asked for: no new device, attempts stop at
    /// their next safe point.
    pub shutdown: ShutdownToken,
    pub(crate) inflight: InFlight,
    /// The sync worker (with `[central]`): a port whose central work order's
    /// leases are used up asks it for a round (the next block) and waits.
    pub(crate) sync: std::sync::OnceLock<Arc<imprint_sync::SyncWorker>>,
    /// The data dir lock, held until [`Station::shutdown`] ends (or the last
    /// handle is dropped).
    lock: Mutex<Option<DataDirLock>>,
}

/// Attempts running now, for [`Station::shutdown`] to wait on.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    running: Mutex<BTreeMap<String, String>>,
    cv: Condvar,
    stopped_at_safe_point: AtomicUsize,
}

/// Registered while an attempt runs (also when its thread panics).
pub(crate) struct InFlightGuard<'a> {
    set: &'a InFlight,
    attempt_id: String,
}

impl InFlight {
    pub(crate) fn enter(&self, attempt_id: &str, port: &str) -> InFlightGuard<'_> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(attempt_id.to_string(), port.to_string());
        InFlightGuard { set: self, attempt_id: attempt_id.to_string() }
    }

    pub(crate) fn note_stopped(&self) {
        self.stopped_at_safe_point.fetch_add(1, Ordering::SeqCst);
    }

    /// Wait until no attempt runs or `deadline`; the ports still running then.
    fn wait_idle(&self, deadline: Instant) -> Vec<String> {
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while !g.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = match self.cv.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        g.values().cloned().collect()
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.set.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.attempt_id);
        self.set.cv.notify_all();
    }
}

impl StationCtx {
    /// The batch new attempts are recorded under.
    pub fn batch(&self) -> Option<String> {
        self.batch.lock().map(|b| b.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The operator new attempts are recorded under.
    pub fn operator(&self) -> Option<String> {
        self.operator.lock().map(|b| b.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// A running station.
#[derive(Clone)]
pub struct Station {
    ctx: Arc<StationCtx>,
    /// The background sync worker, when `[central]` is configured.
    sync: Option<Arc<imprint_sync::SyncWorker>>,
    /// The `/metrics` listener, when `[metrics] listen` is set.
    metrics_server: Option<Arc<crate::metrics::MetricsServer>>,
    /// Scheduled backups, when `[backup] interval_minutes` is set.
    backups: Option<Arc<crate::backup::Scheduler>>,
}

/// Read the store's facts into the metrics, then encode them.
fn render_metrics(ctx: &StationCtx) -> String {
    match ctx.store.facts() {
        Ok(f) => ctx.metrics.set_store_facts(&f),
        Err(e) => tracing::warn!(error = %e, "metrics: could not read the store's facts"),
    }
    ctx.metrics.set_signer_queue(ctx.signer.queue_len());
    ctx.metrics.encode()
}

/// Create the development CA (key and self-signed root) if it does not exist yet.
pub fn ensure_dev_ca(cfg: &StationConfig) -> Result<(), StationError> {
    let chain_path = cfg.ca_chain_path();
    if chain_path.exists() {
        return Ok(());
    }
    let mut signer = open_signer(&cfg.signer_uri(), None)?;
    let root = ca::self_signed_root(signer.as_mut(), &CaSubject::new(ca::DEVELOPMENT_CA_CN), 3650, true)?;
    write_chain(&chain_path, &[root])?;
    tracing::warn!(path = %chain_path.display(), "created a DEVELOPMENT CA: certificates it issues are for testing only");
    Ok(())
}

/// Write a PEM chain file atomically, mode 0600 (a missing directory is
/// created 0700).
pub fn write_chain(path: &Path, chain: &[Vec<u8>]) -> Result<(), StationError> {
    let text: String = chain.iter().map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone()))).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fsutil::create_private_dir(dir).map_err(|e| StationError::Setup(format!("{}: {e}", dir.display())))?;
    }
    fsutil::write_private_file(path, text.as_bytes()).map_err(|e| StationError::Setup(format!("{}: {e}", path.display())))?;
    Ok(())
}

impl Station {
    /// Open the store and the signer, check that the CA certificate is the
    /// signer's key, and finish anything a stopped station left behind.
    ///
    /// Takes the data dir's lock first: a second station on the same data
    /// dir is refused ([`StationError::Lock`]) before it touches anything.
    pub fn open(cfg: StationConfig, pin: Option<Pin>) -> Result<Station, StationError> {
        // 0700, tightened if it exists: it holds the store, logs and the CA chain.
        fsutil::create_private_dir(&cfg.data_dir).map_err(|e| StationError::Setup(format!("data dir {}: {e}", cfg.data_dir.display())))?;
        let chain_path = cfg.ca_chain_path();
        fsutil::tighten(&chain_path, fsutil::FILE_MODE).map_err(|e| StationError::Setup(format!("{}: {e}", chain_path.display())))?;
        let lock = DataDirLock::acquire(&cfg.data_dir)?;
        let development = cfg.is_development();
        if development {
            ensure_dev_ca(&cfg)?;
        }
        let store = Arc::new(Store::open(&cfg.store_path())?);
        store.set_station_id(&cfg.station_id);
        // A restored store re-learns from the center before anything else
        // (recovery included): a device certified after the backup must be
        // found by its key, never certified twice.
        if store.meta(imprint_store::backup::META_RESTORE_PENDING)?.is_some() {
            crate::backup::finish_restore(&cfg, &store, None).map_err(|e| StationError::Setup(e.to_string()))?;
        }
        let interrupted = store.interrupt_running()?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "attempts left running by a stopped station marked interrupted");
        }
        // Overproduction is loud: a red Health item (health.rs) and an audit entry.
        match store.record_overproduction() {
            Ok(over) => {
                for w in over {
                    tracing::error!(work_order = %w.id, quantity = w.quantity, issued = w.issued, certified = w.certified,
                        "OVERPRODUCTION: more certificates recorded for a work order than its quantity");
                }
            }
            Err(e) => tracing::error!(error = %e, "the work orders could not be checked for overproduction"),
        }
        let signer = open_signer(&cfg.signer_uri(), pin)?;
        let chain_path = cfg.ca_chain_path();
        let text = std::fs::read_to_string(&chain_path).map_err(|e| {
            StationError::Setup(format!(
                "no CA certificate at {} ({e}): create one with `imprint ca init`, or import the chain your root CA signed",
                chain_path.display()
            ))
        })?;
        let chain = ca::load_chain_pem(&text)?;
        let issuing = chain.first().cloned().ok_or_else(|| StationError::Setup("the CA chain file is empty".into()))?;
        // An expired or not yet valid CA issues nothing that verifies: refused with its dates.
        let now = time::OffsetDateTime::now_utc();
        let ca_validity = ca::check_chain_validity(&chain, now)?;
        let warn_days = i64::from(cfg.ca_expiry_warn_days);
        if ca_validity.days_left(now) < warn_days {
            tracing::warn!(
                not_after = %ca::rfc3339(ca_validity.not_after),
                subject = %ca_validity.first_to_expire,
                days_left = ca_validity.days_left(now),
                "the CA certificate expires soon: device certificates are capped at its notAfter; renew the CA"
            );
        }
        ca::check_ca_matches_signer(&issuing, signer.as_ref())?;
        let issuer_dn = issuance::summarize(&issuing).map_err(StationError::Setup)?.subject;
        let chain_der: Vec<u8> = chain.concat();
        let metrics = crate::metrics::Metrics::new();
        let signer = SignerHandle::spawn_with_metrics(signer, issuing, cfg.profile.clone(), Some(metrics.clone()))
            .map_err(|e| StationError::Setup(format!("signer thread: {e}")))?;
        let batch = Mutex::new(cfg.batch.clone());
        let events = match &cfg.mqtt {
            Some(m) => Some(
                crate::events::EventPublisher::spawn(store.clone(), m.clone(), &cfg.station_id)
                    .map_err(|e| StationError::Setup(format!("MQTT event publisher thread: {e}")))?,
            ),
            None => None,
        };
        let ctx = StationCtx {
            cfg,
            store,
            signer,
            chain_der,
            chain,
            issuer_dn,
            ca_validity,
            development,
            metrics,
            batch,
            operator: Mutex::new(None),
            events,
            shutdown: ShutdownToken::new(),
            inflight: InFlight::default(),
            sync: std::sync::OnceLock::new(),
            lock: Mutex::new(Some(lock)),
        };
        let mut station = Station { ctx: Arc::new(ctx), sync: None, metrics_server: None, backups: None };
        station.recover()?;
        if let Some(central) = &station.ctx.cfg.central {
            let worker = imprint_sync::SyncWorker::spawn_with(
                station.ctx.store.clone(),
                &station.ctx.cfg.station_id,
                central.clone(),
                station.ctx.cfg.work_orders.lease_policy(),
            )
            .map_err(|e| StationError::Setup(format!("sync worker: {e}")))?;
            let worker = Arc::new(worker);
            let _ = station.ctx.sync.set(worker.clone());
            station.sync = Some(worker);
        }
        if let Some(addr) = station.ctx.cfg.metrics.addr().map_err(StationError::Setup)? {
            if !addr.ip().is_loopback() {
                tracing::warn!(listen = %addr, "the metrics endpoint listens beyond loopback, as configured");
            }
            let ctx = Arc::downgrade(&station.ctx);
            let server =
                crate::metrics::MetricsServer::spawn(addr, Box::new(move || ctx.upgrade().map(|c| render_metrics(&c)).unwrap_or_default()))
                    .map_err(StationError::Setup)?;
            station.metrics_server = Some(Arc::new(server));
        }
        if station.ctx.cfg.backup.interval_minutes > 0 {
            let s = crate::backup::Scheduler::spawn(&station.ctx).map_err(|e| StationError::Setup(format!("backup scheduler: {e}")))?;
            station.backups = Some(Arc::new(s));
        }
        Ok(station)
    }

    /// The station's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.ctx.metrics
    }

    /// The metrics exposition as a scrape sees it now (the store's facts read first).
    pub fn metrics_text(&self) -> String {
        render_metrics(&self.ctx)
    }

    /// Where the metrics endpoint listens, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(|s| s.addr())
    }

    pub fn ctx(&self) -> &StationCtx {
        &self.ctx
    }
    pub fn store(&self) -> &Arc<Store> {
        &self.ctx.store
    }
    pub fn signer(&self) -> &SignerHandle {
        &self.ctx.signer
    }

    /// The station's stop signal: give it to [`crate::shutdown::install_signal_handlers`]
    /// or call [`ShutdownToken::drain`] (the app, when its window closes).
    pub fn shutdown_token(&self) -> &ShutdownToken {
        &self.ctx.shutdown
    }

    /// Stop the station within `within`: stop taking devices, let attempts
    /// in flight reach their next safe point (they are recorded as failed
    /// `station_stopping` and resume on the next run), then join the
    /// workers in dependency order: port threads → signer (PKCS#11 session
    /// closed and module finalized on its own thread) → MQTT publisher
    /// (queued events sent and marked while the store still writes) → sync
    /// worker (a last round) → store writer → data dir lock. Every step is
    /// logged and reported; a second call finds everything stopped.
    pub fn shutdown(&self, within: Duration) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + within;
        // Later steps always get a moment, even when the ports used the window.
        let step_deadline = || deadline.max(Instant::now() + Duration::from_secs(2));
        self.ctx.shutdown.drain();
        let mut report = ShutdownReport::default();
        let step = |report: &mut ShutdownReport, worker: Worker, end: StepEnd, detail: String, t: Instant| {
            let ms = t.elapsed().as_millis() as u64;
            tracing::info!(worker = worker.as_str(), end = end.as_str(), ms, detail = %detail, "shutdown step");
            report.steps.push(ShutdownStep { worker, end, detail, ms });
        };

        let t = Instant::now();
        let cut = self.ctx.inflight.wait_idle(deadline);
        report.attempts_stopped = self.ctx.inflight.stopped_at_safe_point.load(Ordering::SeqCst);
        let end = if cut.is_empty() { StepEnd::Joined } else { StepEnd::Cut };
        let detail = if cut.is_empty() {
            format!("{} attempts stopped at a safe point", report.attempts_stopped)
        } else {
            format!("{} attempts stopped at a safe point; still running at the deadline: {}", report.attempts_stopped, cut.join(", "))
        };
        report.attempts_cut = cut;
        step(&mut report, Worker::Ports, end, detail, t);

        let t = Instant::now();
        match self.ctx.signer.shutdown(step_deadline()) {
            Ok(true) => {
                step(&mut report, Worker::Signer, StepEnd::Joined, format!("{} closed on its thread", self.ctx.signer.info().kind), t)
            }
            Ok(false) => step(&mut report, Worker::Signer, StepEnd::NotRunning, "already stopped".into(), t),
            Err(e) => step(&mut report, Worker::Signer, StepEnd::Cut, e, t),
        }

        let t = Instant::now();
        match &self.ctx.events {
            Some(p) => {
                let d = p.shutdown(&self.ctx.store, step_deadline());
                report.events_sent = d.sent;
                report.events_left = d.left;
                let end = if d.joined { StepEnd::Joined } else { StepEnd::Cut };
                step(&mut report, Worker::MqttPublisher, end, format!("{} events sent, {} left queued", d.sent, d.left), t);
            }
            None => step(&mut report, Worker::MqttPublisher, StepEnd::NotRunning, "not configured".into(), t),
        }

        let t = Instant::now();
        match &self.sync {
            Some(w) => {
                let d = w.shutdown(step_deadline());
                report.sync_backlog_left = Some(d.backlog_left);
                let end = if d.joined { StepEnd::Joined } else { StepEnd::Cut };
                step(&mut report, Worker::Sync, end, format!("backlog {} changes", d.backlog_left), t);
            }
            None => step(&mut report, Worker::Sync, StepEnd::NotRunning, "not configured".into(), t),
        }

        if let Some(b) = &self.backups {
            b.stop();
        }
        if let Some(m) = &self.metrics_server {
            m.stop();
        }
        let t = Instant::now();
        self.ctx.store.close();
        step(&mut report, Worker::StoreWriter, StepEnd::Joined, "everything queued committed".into(), t);

        let released = self.ctx.lock.lock().unwrap_or_else(|p| p.into_inner()).take().is_some();
        if released {
            tracing::info!(data_dir = %self.ctx.cfg.data_dir.display(), "data dir lock released");
        }
        report.ms = started.elapsed().as_millis() as u64;
        report
    }

    /// The sync worker's live status; None when no `[central]` is configured.
    pub fn sync_status(&self) -> Option<imprint_sync::LiveStatus> {
        self.sync.as_ref().map(|w| w.status())
    }

    /// A sync round now (ends a backoff wait early), waiting at most `within`
    /// for a round begun after the call to finish; false if none did in time.
    pub fn sync_now(&self, within: std::time::Duration) -> bool {
        match &self.sync {
            Some(w) => w.round_now(within),
            None => false,
        }
    }

    /// Set the work order / batch for attempts started from now on.
    pub fn set_batch(&self, batch: Option<String>) {
        let batch = batch.map(|b| b.trim().to_string()).filter(|b| !b.is_empty());
        match self.ctx.batch.lock() {
            Ok(mut g) => *g = batch,
            Err(p) => *p.into_inner() = batch,
        }
    }

    /// Set the operator new attempts are recorded under (None when nobody is signed in).
    pub fn set_operator(&self, operator: Option<String>) {
        match self.ctx.operator.lock() {
            Ok(mut g) => *g = operator,
            Err(p) => *p.into_inner() = operator,
        }
    }

    /// Complete intents journaled before a crash: re-sign the identical plan.
    fn recover(&self) -> Result<(), StationError> {
        for row in self.ctx.store.pending_intents()? {
            match complete_intent(&self.ctx, &row) {
                Ok(()) => {
                    tracing::info!(serial = %row.serial_hex, device = %row.device_serial, "completed a certificate journaled before a stop")
                }
                Err(e) => tracing::warn!(serial = %row.serial_hex, error = %e, "could not complete a journaled certificate yet"),
            }
        }
        Ok(())
    }

    /// Provision the device on one port.
    /// QA verification of the device on `port` (writes nothing to it),
    /// recorded as a verdict under the signed-in operator.
    pub fn verify(&self, port: &str) -> Result<crate::qa::QaOutcome, crate::qa::QaError> {
        self.verify_at(port, time::OffsetDateTime::now_utc())
    }

    /// [`Station::verify`] judging validity as of `now` (tests: an expired
    /// certificate without waiting years).
    pub fn verify_at(&self, port: &str, now: time::OffsetDateTime) -> Result<crate::qa::QaOutcome, crate::qa::QaError> {
        let operator = self.ctx.operator();
        let ctx = crate::qa::QaContext {
            cfg: &self.ctx.cfg,
            store: &self.ctx.store,
            chain: &self.ctx.chain,
            central: self.ctx.cfg.central.as_ref(),
        };
        crate::qa::verify(ctx, port, operator.as_deref(), now)
    }

    pub fn provision(&self, port: &str, progress: Option<&ProgressFn>) -> Result<AttemptResult, StoreError> {
        run_attempt(&self.ctx, port, progress)
    }

    /// Provision several ports at once, one thread each.
    pub fn provision_all(&self, ports: &[String], progress: Option<ProgressFn>) -> Vec<Result<AttemptResult, PortError>> {
        let handles: Vec<_> = ports
            .iter()
            .map(|p| {
                let st = self.clone();
                let port = p.clone();
                let pr = progress.clone();
                std::thread::Builder::new().name(format!("port {port}")).spawn(move || st.provision(&port, pr.as_ref()))
            })
            .collect();
        handles
            .into_iter()
            .zip(ports)
            .map(|(h, port)| match h {
                Ok(h) => match h.join() {
                    Ok(r) => r.map_err(PortError::from),
                    Err(payload) => Err(PortError::Panicked { port: port.clone(), reason: crate::driver::panic_text(payload.as_ref()) }),
                },
                Err(e) => Err(PortError::Spawn { port: port.clone(), reason: e.to_string() }),
            })
            .collect()
    }
}

/// A worker [`Station::shutdown`] stops, in the order it stops them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Worker {
    Ports,
    Signer,
    MqttPublisher,
    Sync,
    StoreWriter,
}

impl Worker {
    pub fn as_str(self) -> &'static str {
        match self {
            Worker::Ports => "ports",
            Worker::Signer => "signer",
            Worker::MqttPublisher => "mqtt_publisher",
            Worker::Sync => "sync",
            Worker::StoreWriter => "store_writer",
        }
    }
}

/// How a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepEnd {
    /// Drained and joined.
    Joined,
    /// Not configured, or stopped before.
    NotRunning,
    /// Still busy at the deadline: left behind (its work resumes on the next run).
    Cut,
}

impl StepEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            StepEnd::Joined => "joined",
            StepEnd::NotRunning => "not_running",
            StepEnd::Cut => "cut",
        }
    }
}

/// One step of a shutdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShutdownStep {
    pub worker: Worker,
    pub end: StepEnd,
    pub detail: String,
    pub ms: u64,
}

/// What [`Station::shutdown`] drained and what it cut, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    pub steps: Vec<ShutdownStep>,
    /// Attempts that stopped at a safe point because the station was stopping.
    pub attempts_stopped: usize,
    /// Ports whose attempt was still running at the deadline.
    pub attempts_cut: Vec<String>,
    pub events_sent: u64,
    /// Events still queued (-1: unknown).
    pub events_left: i64,
    pub sync_backlog_left: Option<u64>,
    pub ms: u64,
}

impl ShutdownReport {
    /// Every worker drained and joined (nothing cut).
    pub fn clean(&self) -> bool {
        self.steps.iter().all(|s| s.end != StepEnd::Cut)
    }
}

impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<String> = self.steps.iter().map(|s| format!("{} {} ({})", s.worker.as_str(), s.end.as_str(), s.detail)).collect();
        write!(f, "{} in {} ms: {}", if self.clean() { "stopped cleanly" } else { "stopped with work cut" }, self.ms, steps.join(" -> "))
    }
}

/// Re-sign a journaled plan and record the certificate.
pub(crate) fn complete_intent(ctx: &StationCtx, row: &CertRow) -> Result<(), SignerError> {
    let bad = |what: &str| SignerError::Failed(format!("journaled certificate {} has a bad {what}", row.id));
    let plan = IssuePlan {
        device_serial: row.device_serial.clone(),
        spki_der: row.spki_der.clone(),
        serial: hex::decode(&row.serial_hex).map_err(|_| bad("serial"))?,
        not_before: row.not_before.get().ok_or_else(|| bad("not_before"))?.get(),
        not_after: row.not_after.get().ok_or_else(|| bad("not_after"))?.get(),
    };
    let cert = ctx.signer.issue(plan).map_err(|e| match e {
        issuance::IssueError::Signer(s) => s,
        other => SignerError::Failed(other.to_string()),
    })?;
    let fp = issuance::summarize(&cert).map(|s| s.fingerprint_sha256).unwrap_or_default();
    ctx.store
        .mark_issued(&row.id, &cert, &ctx.chain_der, &fp)
        .map_err(|e| SignerError::Failed(format!("recording the re-signed certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What anyhow's `{:#}` prints: the error, then each source, joined by ": ".
    fn chain(e: &dyn std::error::Error) -> String {
        let mut parts = vec![e.to_string()];
        let mut cur = e.source();
        while let Some(s) = cur {
            parts.push(s.to_string());
            cur = s.source();
        }
        parts.join(": ")
    }

    /// Printed as "signer URI is invalid: X: signer URI is invalid: X".
    #[test]
    fn signer_and_ca_errors_print_each_cause_once() {
        for e in [
            StationError::from(SignerError::BadUri("CAUSE-X".into())),
            StationError::from(SignerError::PinRejected("CAUSE-X".into())),
            StationError::from(ca::CaError::Signer(SignerError::BadUri("CAUSE-X".into()))),
            StationError::from(ca::CaError::BadCertificate("CAUSE-X".into())),
            StationError::from(StoreError::NotFound("CAUSE-X".into())),
        ] {
            let shown = chain(&e);
            assert_eq!(shown.matches("CAUSE-X").count(), 1, "{shown}");
        }
        let e = StationError::from(ca::CaError::Signer(SignerError::PinRejected("p".into())));
        assert!(matches!(e, StationError::Signer(SignerError::PinRejected(_))), "a signer fault is the signer's, not the certificate's");
    }
}
