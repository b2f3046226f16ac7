//! The app's one managed state: the station (once open), its bench, and
//! simulated devices the operator attached.

use crate::dto::{ApiError, BenchEventDto};
use imprint_devsim::{SimConfig, SimDevice, SimHandle};
use imprint_signer::Pin;
use imprint_station::{Bench, BenchEvent, BenchEventFn, Mode, Station, StationConfig, StationError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How the app was started.
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub cfg: StationConfig,
    /// Where Settings are saved.
    pub config_path: PathBuf,
    /// Attach this many simulated devices at start.
    pub simulate: usize,
    /// `--fault` specs for them (`SPEC` or `N:SPEC`).
    pub faults: Vec<String>,
}

/// What the backend pushes to the window.
#[derive(Clone, Debug)]
pub enum UiEvent {
    /// Event `bench`: a tile changed.
    Bench(BenchEventDto),
    /// Event `station`: the station opened, failed to open, or was reopened.
    StationChanged,
}

/// Sends events to the window (or to a test).
pub type Emitter = Arc<dyn Fn(UiEvent) + Send + Sync>;

struct Inner {
    cfg: Mutex<StationConfig>,
    config_path: PathBuf,
    simulate: usize,
    faults: Vec<String>,
    station: Mutex<Option<Station>>,
    bench: Mutex<Option<Bench>>,
    startup_error: Mutex<Option<ApiError>>,
    needs_pin: Mutex<bool>,
    sims: Mutex<Vec<SimHandle>>,
    emitter: Mutex<Option<Emitter>>,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Map a start-up failure to what the operator sees.
pub fn station_error(e: &StationError) -> ApiError {
    let code = match e {
        StationError::Signer(s) => s.code(),
        other => other.code(),
    };
    ApiError::new(code, e.to_string())
}

impl AppState {
    pub fn new(opts: AppOptions) -> Self {
        AppState {
            inner: Arc::new(Inner {
                cfg: Mutex::new(opts.cfg),
                config_path: opts.config_path,
                simulate: opts.simulate,
                faults: opts.faults,
                station: Mutex::new(None),
                bench: Mutex::new(None),
                startup_error: Mutex::new(None),
                needs_pin: Mutex::new(false),
                sims: Mutex::new(Vec::new()),
                emitter: Mutex::new(None),
            }),
        }
    }

    /// Open the station (without a PIN; the UI asks for one if needed) and
    /// attach the simulated devices asked for on the command line.
    pub fn start(&self, emitter: Emitter) {
        *lock(&self.inner.emitter) = Some(emitter);
        if self.open(None).is_ok() && self.inner.simulate > 0 {
            if let Err(e) = self.attach_simulated(self.inner.simulate, &self.inner.faults.clone()) {
                tracing::error!(error = %e, "could not attach simulated devices");
            }
        }
    }

    pub fn config(&self) -> StationConfig {
        lock(&self.inner.cfg).clone()
    }

    pub fn config_path(&self) -> &PathBuf {
        &self.inner.config_path
    }

    pub fn set_config(&self, cfg: StationConfig) {
        *lock(&self.inner.cfg) = cfg;
    }

    pub fn sim_dir(&self) -> PathBuf {
        self.config().data_dir.join("sim-ports")
    }

    /// Stop the station, if open (the window closed, or before a reopen):
    /// no new device, attempts in flight stop at a safe point, workers
    /// drained and joined in order, data dir lock released.
    pub fn shutdown(&self) -> Option<imprint_station::ShutdownReport> {
        if let Some(b) = lock(&self.inner.bench).take() {
            b.stop();
        }
        let station = lock(&self.inner.station).take()?;
        let report = station.shutdown(imprint_station::DRAIN_WITHIN);
        tracing::info!(report = %report, "station stopped");
        Some(report)
    }

    /// (Re)open the station with `pin` and start its bench.
    pub fn open(&self, pin: Option<Pin>) -> Result<(), ApiError> {
        self.shutdown();
        let cfg = self.config();
        let sim_dir = self.sim_dir();
        let _ = std::fs::create_dir_all(&sim_dir);
        match Station::open(cfg.clone(), pin) {
            Ok(station) => {
                let emitter = lock(&self.inner.emitter).clone();
                let events: BenchEventFn = Arc::new(move |e: &BenchEvent| {
                    if let Some(emit) = &emitter {
                        emit(UiEvent::Bench(match e.clone() {
                            BenchEvent::Tile(t) => BenchEventDto::Tile { tile: t.into() },
                            BenchEvent::Removed { port } => BenchEventDto::Removed { port },
                        }));
                    }
                });
                let mut globs = cfg.port_globs.clone();
                globs.push(format!("{}/*", sim_dir.display()));
                let bench = Bench::start(station.clone(), globs, cfg.system_ports, cfg.mode, events);
                *lock(&self.inner.station) = Some(station);
                *lock(&self.inner.bench) = Some(bench);
                *lock(&self.inner.startup_error) = None;
                *lock(&self.inner.needs_pin) = false;
                self.changed();
                Ok(())
            }
            Err(e) => {
                let err = station_error(&e);
                let pin_problem = matches!(
                    &e,
                    StationError::Signer(imprint_core::signer::SignerError::PinRejected(_))
                        | StationError::Signer(imprint_core::signer::SignerError::PinLocked(_))
                );
                *lock(&self.inner.needs_pin) = pin_problem;
                *lock(&self.inner.startup_error) = Some(err.clone());
                tracing::error!(error = %err, "station did not start");
                self.changed();
                Err(err)
            }
        }
    }

    fn changed(&self) {
        if let Some(emit) = lock(&self.inner.emitter).clone() {
            emit(UiEvent::StationChanged);
        }
    }

    pub fn station(&self) -> Result<Station, ApiError> {
        lock(&self.inner.station).clone().ok_or_else(|| {
            lock(&self.inner.startup_error)
                .clone()
                .unwrap_or_else(|| ApiError::new("not_ready", "the station is not open yet"))
        })
    }

    pub fn bench(&self) -> Result<Bench, ApiError> {
        self.station()?;
        lock(&self.inner.bench).clone().ok_or_else(|| ApiError::new("not_ready", "the bench is not running"))
    }

    pub fn startup_error(&self) -> Option<ApiError> {
        lock(&self.inner.startup_error).clone()
    }

    pub fn needs_pin(&self) -> bool {
        *lock(&self.inner.needs_pin)
    }

    pub fn simulated(&self) -> u32 {
        lock(&self.inner.sims).len() as u32
    }

    /// Attach `count` more simulated devices to the bench.
    pub fn attach_simulated(&self, count: usize, faults: &[String]) -> Result<u32, ApiError> {
        let plan = imprint_devsim::fault_plan(faults, count).map_err(|e| ApiError::new("bad_fault", e))?;
        let cfg = self.config();
        let dir = self.sim_dir();
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::new("io", format!("{}: {e}", dir.display())))?;
        let mut sims = lock(&self.inner.sims);
        let start = sims.len();
        for (i, faults) in plan.into_iter().enumerate() {
            let mut c = SimConfig::new(format!("SIM-{:04}", start + i + 1));
            c.baud = cfg.baud;
            c.link_dir = Some(dir.clone());
            c.faults = faults;
            sims.push(SimDevice::spawn(c).map_err(|e| ApiError::new("simulator", e.to_string()))?);
        }
        Ok(sims.len() as u32)
    }

    pub fn mode(&self) -> Mode {
        lock(&self.inner.bench).as_ref().map(|b| b.mode()).unwrap_or(self.config().mode)
    }
}
