//! The running station as both shells see it: open (with a PIN when the
//! signer needs one), the bench engine, simulated devices, scans, mode,
//! settings, sync, shutdown. The app keeps one `Api` for its lifetime; the
//! CLI's `watch`, `station` and `provision` each make one.

use crate::auth::{Actor, ActorKind, Credentials, NewOperator};
use crate::engine::{Bench, BenchEvent, BenchEventFn, PortSource, Tile, TileState};
use crate::roles::{Permission, Role};
use crate::scan::{Scan, ScanKind, ScanResult};
use crate::settings::SettingsView;
use crate::{ApiError, ApiResult, ErrorCode};
use imprint_devsim::{SimConfig, SimDevice, SimHandle};
use imprint_signer::Pin;
use imprint_station::{Mode, Station, StationConfig};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ts_rs::TS;

/// How the station was started.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    pub cfg: StationConfig,
    /// Where Settings are saved.
    pub config_path: PathBuf,
    /// Attach this many simulated devices at start.
    pub simulate: usize,
    /// `--fault` specs for them (`SPEC` or `N:SPEC`).
    pub faults: Vec<String>,
    /// Extra port globs to watch (on top of the config's).
    pub extra_globs: Vec<String>,
    /// Watch the OS's serial ports too (on top of the config's setting).
    pub system_ports: bool,
    /// Fixed ports to provision once each, not watched (`imprint provision`).
    /// When set, no glob is watched.
    pub fixed_ports: Vec<String>,
    /// Sign the operator out after `[operators] idle_lock_minutes` without a
    /// command (the app; the CLI runs one command per sign-in).
    pub idle_lock: bool,
}

impl ApiOptions {
    pub fn new(cfg: StationConfig, config_path: PathBuf) -> Self {
        ApiOptions {
            cfg,
            config_path,
            simulate: 0,
            faults: Vec::new(),
            extra_globs: Vec::new(),
            system_ports: false,
            fixed_ports: Vec::new(),
            idle_lock: false,
        }
    }
}

/// What the station pushes to a shell.
#[derive(Clone, Debug)]
pub enum ApiEvent {
    /// A tile changed.
    Bench(BenchEvent),
    /// The station opened, failed to open, was reopened, or is stopping.
    StationChanged,
    /// The central database's state changed (backlog, reachability).
    Sync(SyncView),
}

pub type Emitter = Arc<dyn Fn(ApiEvent) + Send + Sync>;

/// The station as the title bar and the header show it.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct StationInfo {
    pub station_id: String,
    /// Shown as "DEVELOPMENT CA" in the title bar and on every tile.
    pub development: bool,
    /// The station is open (false while it waits for a PIN or after a start-up error).
    pub ready: bool,
    pub needs_pin: bool,
    pub startup_error: Option<ApiError>,
    pub signer_uri: String,
    pub signer_kind: String,
    pub ca_subject: String,
    pub data_dir: String,
    pub log_dir: String,
    pub mode: Mode,
    pub batch: Option<String>,
    /// The work order in effect with issued / quantity (None when none is
    /// set or it is not a work order of this station).
    pub work_order: Option<crate::work_orders::WorkOrderView>,
    /// This station's leased balance of the work order in effect, when it
    /// is a work order of the center (`[central]`), with the warning shown
    /// before it runs out while the center is unreachable.
    pub lease: Option<crate::leases::LeaseView>,
    pub simulated: u32,
    /// The station is draining attempts in flight before it exits.
    pub stopping: bool,
    /// Who is signed in (the title bar; the sign-in and first-run screens).
    pub session: SessionView,
}

/// The center, as the Bench header shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct SyncView {
    /// `[central]` is configured.
    pub configured: bool,
    /// The last round reached the center (false while it fails or before the first).
    pub connected: bool,
    /// Attempts with changes not yet at the center.
    pub backlog_records: u64,
    pub last_success_at: Option<String>,
    /// The last error, only while the center is failing (cleared by a success).
    pub last_error: Option<String>,
    /// Milliseconds until the next try, while backing off.
    pub retry_in_ms: Option<u64>,
    /// Records set aside because they conflict with the center.
    pub quarantined: u64,
}

/// How long Sync now waits for its round before it reports what is known.
pub const SYNC_NOW_WITHIN: Duration = Duration::from_secs(20);

/// How a shutdown went.
#[derive(Clone, Debug, Serialize)]
pub struct ShutdownView {
    /// Every worker drained and joined in time.
    pub clean: bool,
    /// The report in one line (each worker in order, what was cut).
    pub text: String,
}

/// What switching the mode did.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct ModeChange {
    pub mode: Mode,
    /// Devices waiting for the operator: switching to auto does not start
    /// them; ask, then call `provision_all`.
    pub waiting: u32,
}

/// What attaching simulated devices did.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct Attached {
    pub added: u32,
    pub total: u32,
}

/// Who is signed in, as the title bar and the sign-in screen show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct SessionView {
    /// The signed-in operator (None: the sign-in screen).
    pub operator: Option<OperatorSession>,
    /// No operator exists yet: the first-run screen creates the first admin.
    pub needs_first_admin: bool,
    /// Minutes without a command before the station signs the operator out (0: never).
    pub idle_lock_minutes: u32,
    /// Why the last operator was signed out by the station (idle time), once.
    pub signed_out_reason: Option<String>,
}

/// The signed-in operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct OperatorSession {
    pub id: String,
    pub display_name: String,
    pub role: Role,
    pub kind: ActorKind,
    /// What this operator may do (the app hides the rest; the API refuses it regardless).
    pub permissions: Vec<Permission>,
}

struct Session {
    actor: Actor,
    last_used: Instant,
}

struct Inner {
    opts: Mutex<ApiOptions>,
    session: Mutex<Option<Session>>,
    signed_out_reason: Mutex<Option<String>>,
    station: Mutex<Option<Station>>,
    bench: Mutex<Option<Bench>>,
    startup_error: Mutex<Option<ApiError>>,
    sims: Mutex<Vec<SimHandle>>,
    emitter: Emitter,
    stopping: AtomicBool,
    last_sync: Mutex<Option<SyncView>>,
}

/// Handle to the station (cheap to clone).
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Api {
    /// A station not yet open; `emitter` receives tile, station and sync events.
    pub fn new(opts: ApiOptions, emitter: Emitter) -> Api {
        Api {
            inner: Arc::new(Inner {
                opts: Mutex::new(opts),
                session: Mutex::new(None),
                signed_out_reason: Mutex::new(None),
                station: Mutex::new(None),
                bench: Mutex::new(None),
                startup_error: Mutex::new(None),
                sims: Mutex::new(Vec::new()),
                emitter,
                stopping: AtomicBool::new(false),
                last_sync: Mutex::new(None),
            }),
        }
    }

    /// Attach the simulated devices asked for (they wait on their ports even
    /// while the station waits for a PIN), then open the station.
    pub fn start(&self, pin: Option<Pin>) -> ApiResult<StationInfo> {
        let (simulate, faults) = {
            let o = lock(&self.inner.opts);
            (o.simulate, o.faults.clone())
        };
        // The watch (the center's state, and the idle lock) runs whether or
        // not the station opens: an operator signed in while it waits for
        // the signer's PIN is signed out after the idle time too.
        self.spawn_sync_watch();
        let dir = self.sim_dir();
        // Links left by an earlier run point at ptys that no longer exist.
        let _ = std::fs::remove_dir_all(&dir);
        if simulate > 0 {
            self.attach_simulated_unchecked(simulate as u32, &faults)?;
        }
        self.open(pin)?;
        Ok(self.info())
    }

    pub fn config(&self) -> StationConfig {
        lock(&self.inner.opts).cfg.clone()
    }

    pub fn config_path(&self) -> PathBuf {
        lock(&self.inner.opts).config_path.clone()
    }

    fn sim_dir(&self) -> PathBuf {
        self.config().data_dir.join("sim-ports")
    }

    fn emit(&self, ev: ApiEvent) {
        (self.inner.emitter)(ev);
    }

    /// (Re)open the station with `pin` and start its engine. The tiles of a
    /// bench being replaced keep their results.
    pub fn open(&self, pin: Option<Pin>) -> ApiResult<()> {
        if self.inner.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::new(ErrorCode::NotReady, "the station is stopping"));
        }
        // The old station first stops its attempts at their next safe point
        // (they resume on the reopened one), then its engine and workers go;
        // its shutdown releases the data dir lock for the new station.
        let old = lock(&self.inner.station).take();
        if let Some(st) = &old {
            st.shutdown_token().drain();
        }
        let previous = match lock(&self.inner.bench).take() {
            Some(b) => {
                b.stop();
                b.tiles()
            }
            None => Vec::new(),
        };
        if let Some(st) = old {
            let r = st.shutdown(imprint_station::DRAIN_WITHIN);
            tracing::info!(report = %r, "station reopened");
        }
        let opts = lock(&self.inner.opts).clone();
        let cfg = opts.cfg.clone();
        let sim_dir = self.sim_dir();
        let _ = std::fs::create_dir_all(&sim_dir);
        match Station::open(cfg.clone(), pin) {
            Ok(station) => {
                station.set_operator(self.provisioning_operator());
                let emitter = self.inner.emitter.clone();
                let under_order = station.clone();
                let events: BenchEventFn = Arc::new(move |e: &BenchEvent| {
                    emitter(ApiEvent::Bench(e.clone()));
                    // A device finished under a work order: its issued count may have
                    // moved, and the header re-reads StationInfo on this event.
                    let finished = matches!(e, BenchEvent::Tile { tile } if matches!(tile.state, TileState::Passed | TileState::Failed));
                    if finished && under_order.ctx().batch().is_some() {
                        emitter(ApiEvent::StationChanged);
                    }
                });
                let ports = if opts.fixed_ports.is_empty() {
                    let mut globs = cfg.port_globs.clone();
                    globs.extend(opts.extra_globs.iter().cloned());
                    globs.push(format!("{}/*", sim_dir.display()));
                    PortSource { globs, system_ports: cfg.system_ports || opts.system_ports, fixed: Vec::new() }
                } else {
                    PortSource { globs: Vec::new(), system_ports: false, fixed: opts.fixed_ports.clone() }
                };
                let bench = Bench::start(station.clone(), ports, cfg.mode, events, previous);
                *lock(&self.inner.station) = Some(station);
                *lock(&self.inner.bench) = Some(bench);
                *lock(&self.inner.startup_error) = None;
                self.emit(ApiEvent::StationChanged);
                Ok(())
            }
            Err(e) => {
                let err: ApiError = e.into();
                // Logged to the file (info: a shell shows the error itself, once).
                tracing::info!(code = %err.code, error = %err.message, "station did not start");
                *lock(&self.inner.startup_error) = Some(err.clone());
                self.emit(ApiEvent::StationChanged);
                Err(err)
            }
        }
    }

    /// The open station, or why there is none.
    pub fn station(&self) -> ApiResult<Station> {
        lock(&self.inner.station).clone().ok_or_else(|| {
            lock(&self.inner.startup_error).clone().unwrap_or_else(|| ApiError::new(ErrorCode::NotReady, "the station is not open yet"))
        })
    }

    pub fn bench(&self) -> ApiResult<Bench> {
        self.station()?;
        lock(&self.inner.bench).clone().ok_or_else(|| ApiError::new(ErrorCode::NotReady, "the bench is not running"))
    }

    pub fn startup_error(&self) -> Option<ApiError> {
        lock(&self.inner.startup_error).clone()
    }

    pub fn info(&self) -> StationInfo {
        let cfg = self.config();
        let st = self.station().ok();
        let startup_error = self.startup_error();
        let (signer_uri, signer_kind, ca_subject, development, batch) = match &st {
            Some(s) => {
                let i = s.signer().info();
                (i.uri.clone(), i.kind.to_string(), s.ctx().issuer_dn.clone(), s.ctx().development, s.ctx().batch())
            }
            None => (imprint_signer::display_uri(&cfg.signer_uri()), String::new(), String::new(), cfg.is_development(), cfg.batch.clone()),
        };
        StationInfo {
            station_id: cfg.station_id.clone(),
            development,
            ready: st.is_some(),
            needs_pin: startup_error.as_ref().is_some_and(|e| e.code.is_pin_problem()),
            startup_error,
            signer_uri,
            signer_kind,
            ca_subject,
            data_dir: cfg.data_dir.display().to_string(),
            log_dir: cfg.log_dir().display().to_string(),
            mode: self.mode(),
            work_order: st.as_ref().zip(batch.as_deref()).and_then(|(s, b)| s.store().work_order(b).ok().flatten()).map(Into::into),
            lease: st.as_ref().zip(batch.as_deref()).and_then(|(s, b)| {
                let reachable = s.sync_status().is_some_and(|l| l.connected);
                crate::leases::view(s.store(), b, cfg.work_orders.lease_low_water, reachable)
            }),
            batch,
            simulated: lock(&self.inner.sims).len() as u32,
            stopping: self.inner.stopping.load(Ordering::Relaxed),
            session: self.session(),
        }
    }

    pub fn mode(&self) -> Mode {
        lock(&self.inner.bench).as_ref().map(|b| b.mode()).unwrap_or(self.config().mode)
    }

    pub fn tiles(&self) -> ApiResult<Vec<Tile>> {
        Ok(self.bench_snapshot()?.tiles)
    }

    /// All tiles with the revision they were read at (the UI's start and
    /// every reopen: it keeps, per tile, whichever of this and the pushed
    /// events is newer).
    pub fn bench_snapshot(&self) -> ApiResult<crate::engine::BenchSnapshot> {
        self.require(Permission::View)?;
        Ok(self.bench()?.snapshot())
    }

    /// Provision (or retry) the device on `port`.
    pub fn provision(&self, port: &str) -> ApiResult<()> {
        self.require(Permission::Provision)?;
        Ok(self.bench()?.provision(port)?)
    }

    /// Provision every device waiting for the operator; returns how many started.
    pub fn provision_all(&self) -> ApiResult<u32> {
        self.require(Permission::Provision)?;
        Ok(self.bench()?.provision_all_ready() as u32)
    }

    /// Switch auto/manual. Devices already waiting are not started here.
    pub fn set_mode(&self, mode: Mode) -> ApiResult<ModeChange> {
        self.require(Permission::Provision)?;
        let b = self.bench()?;
        b.set_mode(mode);
        self.emit(ApiEvent::StationChanged);
        Ok(ModeChange { mode, waiting: b.waiting() as u32 })
    }

    /// Set the work order for attempts started from now on (None clears
    /// it). An unknown, closed or expired work order is refused
    /// (`work_order_refused`) and the one in effect stays.
    pub fn set_batch(&self, batch: Option<String>) -> ApiResult<Option<String>> {
        self.require(Permission::ScanWorkOrder)?;
        let st = self.station()?;
        let batch = batch.map(|b| b.trim().to_string()).filter(|b| !b.is_empty());
        if let Some(b) = &batch {
            self.usable_work_order(&st, b)?;
        }
        st.set_batch(batch);
        self.emit(ApiEvent::StationChanged);
        Ok(st.ctx().batch())
    }

    /// The work order a scan names, if it may be used here now. With
    /// `[central]` the center shows this station only the work orders that
    /// name it (central schema 18), so one it does not know is refused as
    /// not assigned to this station (`work_order_refused`).
    fn usable_work_order(&self, st: &Station, id: &str) -> ApiResult<imprint_store::WorkOrderRow> {
        use imprint_store::{StoreError, WorkOrderRefusal};
        match st.store().usable_work_order(id) {
            Err(StoreError::WorkOrder(WorkOrderRefusal::Unknown { id })) if self.config().central.is_some() => {
                Err(StoreError::WorkOrder(WorkOrderRefusal::NotAssigned { id, withdrawn_at: None }).into())
            }
            r => Ok(r?),
        }
    }

    /// A barcode scan (or typed code), see [`crate::scan`].
    pub fn scan(&self, code: &str) -> ApiResult<ScanResult> {
        let scan = crate::scan::parse(code)?;
        let actor = self.require(match scan {
            Scan::WorkOrder(_) => Permission::ScanWorkOrder,
            Scan::Rework(_) => Permission::Rework,
            Scan::Device(_) => Permission::View,
        })?;
        let st = self.station()?;
        match scan {
            Scan::Rework(serial) => {
                let auth = crate::rework::authorise(&actor, &self.config(), st.store(), &serial, Some("authorised by a REWORK: scan"))?;
                let tiles = self.bench().map(|b| b.refresh_rework(&auth.device_serial)).unwrap_or_default();
                let on_bench = tiles.iter().find(|t| t.present);
                Ok(ScanResult {
                    kind: ScanKind::Rework,
                    message: format!(
                        "rework of {} authorised by {} until {}: {}",
                        auth.device_serial,
                        actor.id(),
                        auth.expires_at,
                        match on_bench {
                            Some(t) => format!("the board on slot {} is reset and re-provisioned on its next attempt (Retry)", t.slot),
                            None => "the next board reporting this serial is reset and re-provisioned".into(),
                        }
                    ),
                    port: on_bench.map(|t| t.port.clone()),
                    work_order: st.ctx().batch(),
                })
            }
            Scan::WorkOrder(order) => {
                // Unknown, closed or expired: refused, the work order in effect stays.
                let wo = self.usable_work_order(&st, &order)?;
                st.set_batch(Some(order.clone()));
                self.emit(ApiEvent::StationChanged);
                Ok(ScanResult {
                    kind: ScanKind::WorkOrder,
                    message: format!("work order set to {order} ({} of {} issued, {} left)", wo.issued, wo.quantity, wo.remaining()),
                    port: None,
                    work_order: st.ctx().batch(),
                })
            }
            Scan::Device(label) => Ok(match self.bench()?.find_serial(&label) {
                Some(t) => ScanResult {
                    kind: ScanKind::Device,
                    message: format!("{label} is on slot {}", t.slot),
                    port: Some(t.port),
                    work_order: st.ctx().batch(),
                },
                None => ScanResult {
                    kind: ScanKind::Unknown,
                    message: format!("no device with serial {label} is on the bench (work orders start with WO:)"),
                    port: None,
                    work_order: st.ctx().batch(),
                },
            }),
        }
    }

    /// Attach `count` more simulated devices (`faults`: `SPEC` for all, `N:SPEC` for the Nth new one).
    pub fn attach_simulated(&self, count: u32, faults: &[String]) -> ApiResult<Attached> {
        self.require(Permission::Simulate)?;
        self.attach_simulated_unchecked(count, faults)
    }

    /// Simulated devices get real certificates from whatever CA signs: they
    /// are refused while a production CA is configured.
    fn attach_simulated_unchecked(&self, count: u32, faults: &[String]) -> ApiResult<Attached> {
        if !self.development() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "simulated devices are refused while a production CA signs: they would get real certificates. \
                 Use a station with the development CA for training and tests",
            ));
        }
        if count == 0 || count > 64 {
            return Err(ApiError::bad_request("attach 1 to 64 simulated devices at a time"));
        }
        let plan = imprint_devsim::fault_plan(faults, count as usize).map_err(ApiError::bad_request)?;
        let cfg = self.config();
        let dir = self.sim_dir();
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::io(dir.display(), e))?;
        // A restarted station's simulated boards are new boards: numbered
        // after every SIM serial already certified here, so none is refused
        // as a clone (`duplicate_serial`).
        // (Attached before the station opens: read its store, if there is one.)
        let certified = match self.station() {
            Ok(st) => st.store().highest_serial_number("SIM-")? as usize,
            Err(_) if cfg.store_path().exists() => {
                imprint_store::Store::open_read_only(&cfg.store_path()).and_then(|s| s.highest_serial_number("SIM-")).unwrap_or(0) as usize
            }
            Err(_) => 0,
        };
        let mut sims = lock(&self.inner.sims);
        let start = sims.len();
        let attached = sims.iter().filter_map(|h| h.serial().strip_prefix("SIM-")?.parse::<usize>().ok()).max().unwrap_or(0);
        let base = certified.max(attached);
        for (i, faults) in plan.into_iter().enumerate() {
            let mut c = SimConfig::new(format!("SIM-{:04}", base + i + 1));
            c.baud = cfg.baud;
            c.link_dir = Some(dir.clone());
            c.faults = faults;
            sims.push(
                SimDevice::spawn(c).map_err(|e| ApiError::new(ErrorCode::Simulator, format!("a simulated device did not start: {e}")))?,
            );
        }
        let total = sims.len() as u32;
        drop(sims);
        self.emit(ApiEvent::StationChanged);
        Ok(Attached { added: total - start as u32, total })
    }

    /// History: attempts with their certificates.
    pub fn history(&self, filter: &crate::records::HistoryFilter) -> ApiResult<Vec<crate::records::AttemptView>> {
        let a = self.require(Permission::View)?;
        crate::records::list(&a, self.station()?.store(), filter)
    }

    /// The report for a filter (supervisor): the local store, or with
    /// `central` the central database of the `[central]` section.
    pub fn report(&self, filter: &crate::reports::ReportFilter, central: bool) -> ApiResult<crate::reports::Report> {
        let a = self.require(Permission::Report)?;
        let cfg = self.config();
        self.with_report_source(&cfg, central, |src| crate::reports::report(&a, src, filter, Some(&cfg.qa)))
    }

    /// Write the report for a filter to `path` (chosen in the save dialog) as CSV or PDF.
    pub fn export_report(
        &self,
        filter: &crate::reports::ReportFilter,
        central: bool,
        format: crate::reports::ReportFormat,
        path: &std::path::Path,
    ) -> ApiResult<u32> {
        let a = self.require(Permission::Report)?;
        let cfg = self.config();
        self.with_report_source(&cfg, central, |src| {
            crate::reports::export_file(&a, src, filter, Some(&cfg.qa), &cfg.station_id, format, path)
        })
    }

    fn with_report_source<T>(
        &self,
        cfg: &StationConfig,
        central: bool,
        f: impl FnOnce(&crate::reports::Source<'_>) -> ApiResult<T>,
    ) -> ApiResult<T> {
        if central {
            let c = cfg
                .central
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("no [central] section in the settings: reports come from this station"))?;
            f(&crate::reports::Source::Central(c))
        } else {
            let st = self.station()?;
            f(&crate::reports::Source::Local { store: st.store(), station_id: &cfg.station_id })
        }
    }

    /// One record with its steps and certificate.
    pub fn record(&self, id: &str) -> ApiResult<crate::records::RecordDetail> {
        let a = self.require(Permission::View)?;
        crate::records::show(&a, self.station()?.store(), id)
    }

    /// Revoke certificates (supervisor): recorded, audited and synced by the
    /// running station's store; a device attached whose certificate is now
    /// revoked shows it on its tile at once.
    pub fn revoke(
        &self,
        selector: &crate::lifecycle::RevokeSelector,
        reason: &str,
        comment: Option<&str>,
    ) -> ApiResult<crate::lifecycle::RevokeReport> {
        let a = self.require(Permission::Revoke)?;
        let reason = crate::lifecycle::parse_reason(reason)?;
        let report = crate::lifecycle::revoke(&a, self.station()?.store(), selector, reason, comment)?;
        if let Ok(bench) = self.bench() {
            bench.refresh_revoked();
        }
        Ok(report)
    }

    /// Authorise rework of a device serial (supervisor): recorded, audited
    /// and synced by the running station's store; the next device reporting
    /// that serial is reset, re-keyed and re-certified, and the old
    /// certificate revoked as superseded.
    pub fn authorise_rework(&self, serial: &str, comment: Option<&str>) -> ApiResult<crate::rework::ReworkAuthorisationView> {
        let a = self.require(Permission::Rework)?;
        let auth = crate::rework::authorise(&a, &self.config(), self.station()?.store(), serial, comment)?;
        if let Ok(bench) = self.bench() {
            bench.refresh_rework(&auth.device_serial);
        }
        Ok(auth)
    }

    /// Current certificates expiring within `days` (local, or `central`).
    pub fn certs_expiring(&self, days: u32, central: bool) -> ApiResult<Vec<crate::rework::ExpiringCertView>> {
        let a = self.require(Permission::Report)?;
        let cfg = self.config();
        self.with_store(|s| crate::rework::expiring(&a, &cfg, Some(s), days, central))
    }

    /// QA verification of the device on `port` (role qa, supervisor, admin):
    /// reads its certificate, chain, a fresh proof and its lock state,
    /// writing nothing to it, and records the verdict.
    pub fn verify(&self, port: &str) -> ApiResult<crate::qa::QaVerdictView> {
        let a = self.require(Permission::Verify)?;
        crate::qa::verify(&a, &self.station()?, port)
    }

    /// QA verdicts of a device serial (or all), newest first.
    pub fn qa_verdicts(&self, device_serial: Option<&str>) -> ApiResult<Vec<crate::qa::QaVerdictView>> {
        let a = self.require(Permission::View)?;
        crate::qa::verdicts(&a, self.station()?.store(), device_serial, None, Some(200))
    }

    /// The QA sampling plan: verifications still due per work order.
    /// Every work order of this station, newest first; for a supervisor
    /// with `[central]`, also those the center holds for other stations.
    pub fn work_orders(&self) -> ApiResult<Vec<crate::work_orders::WorkOrderView>> {
        let a = self.require(Permission::View)?;
        let cfg = self.config();
        crate::work_orders::list_here_and_at_center(&a, cfg.central.as_ref(), self.station()?.store())
    }

    /// Create a work order (supervisor).
    pub fn add_work_order(&self, r: &crate::work_orders::WorkOrderRequest) -> ApiResult<crate::work_orders::WorkOrderView> {
        let a = self.require(Permission::WorkOrders)?;
        let cfg = self.config();
        let v = crate::work_orders::add(&a, cfg.central.as_ref(), self.station()?.store(), r)?;
        self.emit(ApiEvent::StationChanged);
        Ok(v)
    }

    /// Change a work order's product, quantity or validity window (supervisor).
    pub fn edit_work_order(&self, c: &crate::work_orders::WorkOrderChange) -> ApiResult<crate::work_orders::WorkOrderView> {
        let a = self.require(Permission::WorkOrders)?;
        let cfg = self.config();
        let v = crate::work_orders::edit(&a, cfg.central.as_ref(), self.station()?.store(), c)?;
        self.emit(ApiEvent::StationChanged);
        Ok(v)
    }

    /// Close a work order (supervisor): it issues nothing more.
    pub fn close_work_order(&self, id: &str) -> ApiResult<crate::work_orders::WorkOrderView> {
        let a = self.require(Permission::WorkOrders)?;
        let cfg = self.config();
        let v = crate::work_orders::close(&a, cfg.central.as_ref(), self.station()?.store(), id)?;
        self.emit(ApiEvent::StationChanged);
        Ok(v)
    }

    pub fn qa_due(&self, batch: Option<&str>) -> ApiResult<Vec<crate::qa::QaDueView>> {
        let a = self.require(Permission::Verify)?;
        crate::qa::due(&a, self.station()?.store(), &self.config(), batch)
    }

    /// Health of every dependency; when the station did not open, what is
    /// known without it (each failure under its own item and code).
    pub fn health(&self) -> Vec<crate::health::HealthView> {
        match self.station() {
            Ok(st) => crate::health::of_station(&st),
            Err(e) => crate::health::not_open(&self.config(), &e),
        }
    }

    /// The settings as the Settings view edits them (admin).
    pub fn settings(&self) -> ApiResult<SettingsView> {
        self.require(Permission::Settings)?;
        Ok(SettingsView::of(&self.config(), &self.config_path()))
    }

    /// What saving `new` would change, before and after (the confirmation
    /// an admin sees; secrets are never part of the settings).
    pub fn settings_changes(&self, new: &SettingsView) -> ApiResult<Vec<crate::settings::SettingChange>> {
        self.require(Permission::Settings)?;
        Ok(crate::settings::changes(&SettingsView::of(&self.config(), &self.config_path()), new))
    }

    /// Validate `new`, write only what the operator changed to the config
    /// file, and apply it without wiping the bench's results.
    pub fn save_settings(&self, new: &SettingsView) -> ApiResult<StationInfo> {
        let actor = self.require(Permission::Settings)?;
        let before = SettingsView::of(&self.config(), &self.config_path());
        let cfg = self.config();
        let path = self.config_path();
        let applied = crate::settings::save(&cfg, &path, new)?;
        let changes = crate::settings::changes(&before, new);
        for c in &changes {
            tracing::info!(operator = %actor.id(), key = %c.key, before = %c.before, after = %c.after, "setting changed");
        }
        if !changes.is_empty() {
            let list: Vec<_> = changes.iter().map(|c| serde_json::json!({"key": c.key, "before": c.before, "after": c.after})).collect();
            self.audit(Some(actor.id()), crate::audit::AuditKind::SettingsChanged, serde_json::json!({ "changes": list }));
            if let Some(c) = changes.iter().find(|c| c.key == "signer") {
                self.audit(
                    Some(actor.id()),
                    crate::audit::AuditKind::SignerChanged,
                    serde_json::json!({"before": c.before, "after": c.after}),
                );
            }
        }
        let only_mode = StationConfig { mode: cfg.mode, ..applied.clone() } == cfg;
        lock(&self.inner.opts).cfg = applied.clone();
        if only_mode {
            if let Ok(b) = self.bench() {
                b.set_mode(applied.mode);
            }
            self.emit(ApiEvent::StationChanged);
        } else {
            // Reopen with the new settings; a PIN problem shows in the info.
            let _ = self.open(None);
        }
        Ok(self.info())
    }

    /// The center's state for the Bench header.
    pub fn sync_view(&self) -> SyncView {
        match self.station() {
            Ok(st) => crate::health::sync_view(&st),
            Err(_) => SyncView {
                configured: self.config().central.is_some(),
                connected: false,
                backlog_records: 0,
                last_success_at: None,
                last_error: None,
                retry_in_ms: None,
                quarantined: 0,
            },
        }
    }

    /// A sync round now; returns the center's state after that round (or
    /// after [`SYNC_NOW_WITHIN`], while a long round goes on).
    /// The quarantined records not released yet (anyone who may view).
    pub fn quarantined(&self) -> ApiResult<Vec<crate::central::QuarantineView>> {
        let a = self.require(Permission::View)?;
        crate::central::quarantined(&a, self.station()?.store())
    }

    /// Release a quarantined record after its conflict was resolved
    /// (supervisor): queued again, audited with the comment.
    pub fn release_quarantine(&self, id: i64, comment: &str) -> ApiResult<crate::central::QuarantineReleasedView> {
        let a = self.require(Permission::ReleaseQuarantine)?;
        let r = crate::central::release_quarantine(&a, self.station()?.store(), id, comment)?;
        self.emit(ApiEvent::Sync(self.sync_view()));
        Ok(r)
    }

    pub fn sync_now(&self) -> ApiResult<SyncView> {
        self.require(Permission::SyncNow)?;
        let st = self.station()?;
        if st.ctx().cfg.central.is_none() {
            return Err(ApiError::bad_request("no [central] section in the settings: nothing to sync to"));
        }
        // The round this asks for, not the one before it (whose error would
        // still be shown after the center came back).
        if !st.sync_now(SYNC_NOW_WITHIN) {
            tracing::info!(within_s = SYNC_NOW_WITHIN.as_secs(), "Sync now: the round goes on in the background");
        }
        Ok(self.sync_view())
    }

    /// Push the center's state to the shell when it changes (every second).
    fn spawn_sync_watch(&self) {
        let api = self.clone();
        let r = std::thread::Builder::new().name("imprint-sync-view".into()).spawn(move || {
            while !api.inner.stopping.load(Ordering::Relaxed) {
                api.expire_idle();
                if api.config().central.is_some() {
                    let v = api.sync_view();
                    let changed = lock(&api.inner.last_sync).as_ref() != Some(&v);
                    if changed {
                        *lock(&api.inner.last_sync) = Some(v.clone());
                        api.emit(ApiEvent::Sync(v));
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not start the sync view thread: the header will not update by itself");
        }
    }

    // ---- operators and sign-in ------------------------------------------

    /// Run `f` on the station's store, or, while no station is open in this
    /// process, on the data dir's store under its lock.
    fn with_store<T>(&self, f: impl FnOnce(&imprint_store::Store) -> ApiResult<T>) -> ApiResult<T> {
        match self.station() {
            Ok(st) => f(st.store()),
            Err(_) => crate::with_local_store(&self.config(), f),
        }
    }

    /// The development CA signs: as the open station found it, or as the
    /// config says while no station is open.
    fn development(&self) -> bool {
        match self.station() {
            Ok(st) => st.ctx().development,
            Err(_) => self.config().is_development(),
        }
    }

    fn demo_actor(&self) -> Option<Actor> {
        Actor::demo(self.development(), &self.config().operators)
    }

    /// The signed-in operator (the development CA's demo admin when nobody
    /// is and it is allowed); a command counts as activity for the idle lock.
    pub fn actor(&self) -> ApiResult<Actor> {
        self.expire_idle();
        if let Some(s) = lock(&self.inner.session).as_mut() {
            s.last_used = Instant::now();
            return Ok(s.actor.clone());
        }
        self.demo_actor().ok_or_else(|| {
            let why = lock(&self.inner.signed_out_reason).clone();
            ApiError::new(
                ErrorCode::Unauthenticated,
                why.unwrap_or_else(|| "nobody is signed in: sign in with your badge or your id and PIN".into()),
            )
        })
    }

    /// The signed-in operator, if their role holds `p` (`forbidden` otherwise).
    pub fn require(&self, p: Permission) -> ApiResult<Actor> {
        let a = self.actor()?;
        a.require(p)?;
        Ok(a)
    }

    fn session_actor(&self) -> Option<Actor> {
        lock(&self.inner.session).as_ref().map(|s| s.actor.clone()).or_else(|| self.demo_actor())
    }

    /// Who new attempts are recorded under: the signed-in operator when
    /// they may provision (nobody otherwise: auto mode then starts nothing).
    fn provisioning_operator(&self) -> Option<String> {
        self.session_actor().filter(|a| a.require(Permission::Provision).is_ok()).map(|a| a.id().to_string())
    }

    fn set_session(&self, actor: Option<Actor>, reason: Option<String>) {
        *lock(&self.inner.session) = actor.map(|actor| Session { actor, last_used: Instant::now() });
        *lock(&self.inner.signed_out_reason) = reason;
        if let Ok(st) = self.station() {
            st.set_operator(self.provisioning_operator());
        }
        self.emit(ApiEvent::StationChanged);
    }

    /// Sign the operator out once the idle time has passed (called by
    /// every command and once a second by the watch thread).
    fn expire_idle(&self) {
        let minutes = self.config().operators.idle_lock_minutes;
        if !lock(&self.inner.opts).idle_lock || minutes == 0 {
            return;
        }
        let expired = lock(&self.inner.session).as_ref().is_some_and(|s| {
            matches!(s.actor.kind(), ActorKind::Operator | ActorKind::Bootstrap)
                && s.last_used.elapsed() >= Duration::from_secs(u64::from(minutes) * 60)
        });
        if expired {
            let who = self.session_actor().map(|a| a.id().to_string()).unwrap_or_default();
            tracing::info!(operator = %who, minutes, "signed out: idle");
            self.audit(Some(&who), crate::audit::AuditKind::SignOut, serde_json::json!({"reason": "idle", "minutes": minutes}));
            self.set_session(
                None,
                Some(format!("{who} was signed out after {minutes} minutes without a command: sign in again (devices running went on)")),
            );
        }
    }

    /// The sign-in state.
    pub fn session(&self) -> SessionView {
        let operator = self.session_actor().map(|a| OperatorSession {
            id: a.id().to_string(),
            display_name: a.name().to_string(),
            role: a.role(),
            kind: a.kind(),
            permissions: crate::roles::permissions(a.role()),
        });
        let needs_first_admin = operator.is_none() && self.with_store(crate::auth::needs_first_admin).unwrap_or(false);
        SessionView {
            operator,
            needs_first_admin,
            idle_lock_minutes: if lock(&self.inner.opts).idle_lock { self.config().operators.idle_lock_minutes } else { 0 },
            signed_out_reason: lock(&self.inner.signed_out_reason).clone(),
        }
    }

    /// Sign in with a badge or an id and PIN.
    pub fn sign_in(&self, creds: &Credentials) -> ApiResult<SessionView> {
        let cfg = self.config().operators;
        let actor = self.with_store(|store| crate::auth::sign_in(store, &cfg, creds))?;
        self.set_session(Some(actor), None);
        Ok(self.session())
    }

    /// Run as the configured service operator (the headless station), if
    /// one is configured. Returns whether one was.
    pub fn sign_in_service(&self) -> ApiResult<bool> {
        let cfg = self.config().operators;
        match self.with_store(|store| crate::auth::service(store, &cfg))? {
            Some(actor) => {
                self.set_session(Some(actor), None);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Record a security event in the station's audit trail (best effort:
    /// see [`crate::audit::record`]).
    fn audit(&self, operator: Option<&str>, kind: crate::audit::AuditKind, detail: serde_json::Value) {
        let r = self.with_store(|store| {
            crate::audit::record(store, operator, kind, None, detail);
            Ok(())
        });
        if let Err(e) = r {
            tracing::error!(kind = kind.as_str(), error = %e.message, "could not open the store for the audit trail");
        }
    }

    /// Act as `actor` (signed in by [`crate::auth::command_actor`]: the
    /// CLI signs in before the station opens).
    pub fn act_as(&self, actor: Actor) {
        self.set_session(Some(actor), None);
    }

    /// Sign out (attempts running go on; nothing new starts until someone signs in).
    pub fn sign_out(&self) -> SessionView {
        let who = lock(&self.inner.session).as_ref().map(|s| s.actor.id().to_string());
        if let Some(id) = who {
            tracing::info!(operator = %id, "signed out");
            self.audit(Some(&id), crate::audit::AuditKind::SignOut, serde_json::json!({"reason": "sign_out"}));
        }
        self.set_session(None, None);
        self.session()
    }

    /// First start: create the first admin and sign them in (refused once
    /// any operator exists).
    pub fn create_first_admin(&self, new: &NewOperator) -> ApiResult<SessionView> {
        let actor = self.with_store(|store| crate::auth::add_first_admin(store, new))?;
        self.set_session(Some(actor), None);
        Ok(self.session())
    }

    /// Every operator (admin).
    pub fn operators(&self) -> ApiResult<Vec<crate::auth::OperatorView>> {
        let a = self.actor()?;
        self.with_store(|store| crate::auth::list(&a, store))
    }

    /// Add an operator (admin).
    pub fn add_operator(&self, new: &NewOperator) -> ApiResult<crate::auth::OperatorView> {
        let a = self.actor()?;
        self.with_store(|store| crate::auth::add(&a, store, new))
    }

    /// Enable, disable, change the role, reset the PIN or set the badge of an operator (admin).
    pub fn edit_operator(&self, id: &str, edit: &crate::auth::OperatorEdit) -> ApiResult<crate::auth::OperatorView> {
        let a = self.actor()?;
        let v = self.with_store(|store| crate::auth::edit(&a, store, id, edit))?;
        // A change to the signed-in operator takes effect at once.
        if lock(&self.inner.session).as_ref().is_some_and(|s| s.actor.id() == v.id) && (!v.enabled || v.role != a.role()) && a.id() != v.id
        {
            self.set_session(None, Some(format!("operator {} was changed by an admin: sign in again", v.id)));
        }
        Ok(v)
    }

    /// Ctrl-C / SIGTERM: the first drains the station (no new devices,
    /// attempts stop at their next safe point), the second aborts at once.
    pub fn stop_on_signals(&self) -> ApiResult<()> {
        let st = self.station()?;
        imprint_station::shutdown::install_signal_handlers(st.shutdown_token(), imprint_station::DRAIN_WITHIN)
            .map_err(|e| ApiError::internal(format!("could not install the Ctrl-C handler: {e}")))
    }

    /// A stop was asked for (a signal, a window closing, `shutdown`).
    pub fn stop_requested(&self) -> bool {
        self.inner.stopping.load(Ordering::Relaxed) || self.station().is_ok_and(|s| s.shutdown_token().is_draining())
    }

    /// Stop taking new devices, let attempts in flight reach their next safe
    /// point (bounded by `imprint_station::DRAIN_WITHIN`), then join every
    /// worker in dependency order (ports, signer, MQTT publisher, sync, store
    /// writer) and release the data dir. Returns what was drained and cut
    /// (None when no station was open or it was stopped already).
    pub fn shutdown(&self) -> Option<ShutdownView> {
        if self.inner.stopping.swap(true, Ordering::Relaxed) {
            return None;
        }
        self.emit(ApiEvent::StationChanged);
        let bench = lock(&self.inner.bench).take();
        let station = lock(&self.inner.station).take();
        let report = station.map(|st| {
            st.shutdown_token().drain();
            let r = st.shutdown(imprint_station::DRAIN_WITHIN);
            ShutdownView { clean: r.clean(), text: r.to_string() }
        });
        if let Some(b) = bench {
            b.stop();
        }
        lock(&self.inner.sims).clear();
        report
    }
}
