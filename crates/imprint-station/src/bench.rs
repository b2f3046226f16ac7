//! The bench: one tile per port, kept current from the port watcher and the
//! sessions' progress, provisioning automatically on arrival (auto mode) or
//! on the operator's command (manual mode). The desktop app renders these
//! tiles; it holds no state of its own.

use crate::config::Mode;
use crate::station::{Progress, ProgressFn, ProgressStatus, Station};
use imprint_serial::{PortEvent, PortWatcher};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a tile shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TileState {
    /// A device is attached and waiting for the operator (manual mode).
    Ready,
    Running,
    Passed,
    Failed,
    /// The port went away; the tile keeps its last result until replaced.
    Gone,
}

/// One port / fixture slot on the bench.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tile {
    pub port: String,
    /// 1-based position, stable while the port exists (keyboard: digit keys).
    pub slot: u32,
    pub state: TileState,
    pub present: bool,
    pub device_serial: Option<String>,
    pub stage: String,
    pub percent: u8,
    pub attempt_id: Option<String>,
    pub cert_serial: Option<String>,
    pub resumed: bool,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub hint: Option<String>,
}

/// Something the bench wants shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BenchEvent {
    Tile(Tile),
    Removed { port: String },
}

pub type BenchEventFn = Arc<dyn Fn(&BenchEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BenchError {
    #[error("no device on port {0}")]
    NoSuchPort(String),
    #[error("port {0} is already being provisioned")]
    Busy(String),
    /// The station is stopping: it takes no new device.
    #[error("the station is stopping: it takes no new device")]
    Stopping,
}

struct Inner {
    station: Station,
    mode: Mutex<Mode>,
    tiles: Mutex<BTreeMap<String, Tile>>,
    next_slot: Mutex<u32>,
    events: BenchEventFn,
    stop: AtomicBool,
}

/// Handle to a running bench.
#[derive(Clone)]
pub struct Bench {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bench {
    /// Start watching `globs` (and the system's ports if asked) in `mode`.
    pub fn start(station: Station, globs: Vec<String>, system_ports: bool, mode: Mode, events: BenchEventFn) -> Bench {
        let bench = Bench {
            inner: Arc::new(Inner {
                station,
                mode: Mutex::new(mode),
                tiles: Mutex::new(BTreeMap::new()),
                next_slot: Mutex::new(1),
                events,
                stop: AtomicBool::new(false),
            }),
        };
        let b = bench.clone();
        let _ = std::thread::Builder::new().name("imprint-bench-watch".into()).spawn(move || {
            let mut watcher = PortWatcher::new(globs, system_ports);
            while !b.inner.stop.load(Ordering::Relaxed) && !b.inner.station.shutdown_token().is_draining() {
                for ev in watcher.poll() {
                    match ev {
                        PortEvent::Arrived(p) => b.arrived(&p.path),
                        PortEvent::Departed(path) => b.departed(&path),
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        bench
    }

    pub fn station(&self) -> &Station {
        &self.inner.station
    }

    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }

    pub fn mode(&self) -> Mode {
        *lock(&self.inner.mode)
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.inner.mode) = mode;
        if mode == Mode::Auto {
            self.provision_all_ready();
        }
    }

    /// All tiles, in slot order.
    pub fn tiles(&self) -> Vec<Tile> {
        let mut v: Vec<Tile> = lock(&self.inner.tiles).values().cloned().collect();
        v.sort_by_key(|t| t.slot);
        v
    }

    fn emit(&self, ev: BenchEvent) {
        (self.inner.events)(&ev);
    }

    fn update(&self, port: &str, f: impl FnOnce(&mut Tile)) -> Option<Tile> {
        let mut tiles = lock(&self.inner.tiles);
        let t = tiles.get_mut(port)?;
        f(t);
        Some(t.clone())
    }

    fn arrived(&self, port: &str) {
        let tile = {
            let mut tiles = lock(&self.inner.tiles);
            let slot = match tiles.get(port) {
                Some(t) => t.slot,
                None => {
                    let mut n = lock(&self.inner.next_slot);
                    let s = *n;
                    *n += 1;
                    s
                }
            };
            let t = Tile {
                port: port.to_string(),
                slot,
                state: TileState::Ready,
                present: true,
                device_serial: None,
                stage: "ready".into(),
                percent: 0,
                attempt_id: None,
                cert_serial: None,
                resumed: false,
                code: None,
                reason: None,
                hint: None,
            };
            tiles.insert(port.to_string(), t.clone());
            t
        };
        self.emit(BenchEvent::Tile(tile));
        if self.mode() == Mode::Auto {
            let _ = self.provision(port);
        } else {
            // Manual mode: say who is there (HELLO + IDENT, nothing written)
            // so a scanned label can be matched before provisioning.
            let b = self.clone();
            let port = port.to_string();
            let baud = self.inner.station.ctx().cfg.baud;
            let _ = std::thread::Builder::new().name(format!("identify {port}")).spawn(move || {
                let id = crate::driver::identify(&port, baud);
                let t = b.update(&port, |t| {
                    if t.state != TileState::Ready {
                        return;
                    }
                    match &id {
                        Ok(id) => {
                            t.device_serial = Some(id.serial.clone());
                            t.stage = format!("ready ({})", id.state.as_str());
                        }
                        Err(e) => t.reason = Some(format!("not identified yet: {e}")),
                    }
                });
                if let Some(t) = t {
                    b.emit(BenchEvent::Tile(t));
                }
            });
        }
    }

    fn departed(&self, port: &str) {
        let t = self.update(port, |t| {
            t.present = false;
            if t.state == TileState::Ready || t.state == TileState::Running {
                t.state = TileState::Gone;
            }
        });
        if let Some(t) = t {
            self.emit(BenchEvent::Tile(t));
        }
    }

    /// Provision (or retry) the device on `port`.
    pub fn provision(&self, port: &str) -> Result<(), BenchError> {
        if self.inner.station.shutdown_token().is_draining() {
            return Err(BenchError::Stopping);
        }
        let tile = {
            let mut tiles = lock(&self.inner.tiles);
            let t = tiles.get_mut(port).ok_or_else(|| BenchError::NoSuchPort(port.to_string()))?;
            if !t.present {
                return Err(BenchError::NoSuchPort(port.to_string()));
            }
            if t.state == TileState::Running {
                return Err(BenchError::Busy(port.to_string()));
            }
            t.state = TileState::Running;
            t.stage = "hello".into();
            t.percent = 0;
            t.code = None;
            t.reason = None;
            t.hint = None;
            t.cert_serial = None;
            t.clone()
        };
        self.emit(BenchEvent::Tile(tile));
        let b = self.clone();
        let port = port.to_string();
        let progress: ProgressFn = {
            let b = self.clone();
            Arc::new(move |p: &Progress| b.on_progress(p))
        };
        let _ = std::thread::Builder::new().name(format!("port {port}")).spawn(move || {
            if let Err(e) = b.inner.station.provision(&port, Some(&progress)) {
                let t = b.update(&port, |t| {
                    t.state = TileState::Failed;
                    t.code = Some("store_error".into());
                    t.reason = Some(format!("the attempt could not be recorded: {e}"));
                    t.hint = Some("Check the station's disk, then press Retry.".into());
                });
                if let Some(t) = t {
                    b.emit(BenchEvent::Tile(t));
                }
            }
        });
        Ok(())
    }

    /// Provision every attached device that is waiting (manual mode's "all").
    pub fn provision_all_ready(&self) -> usize {
        let ready: Vec<String> = lock(&self.inner.tiles)
            .values()
            .filter(|t| t.present && t.state == TileState::Ready)
            .map(|t| t.port.clone())
            .collect();
        ready.iter().filter(|p| self.provision(p).is_ok()).count()
    }

    fn on_progress(&self, p: &Progress) {
        let t = self.update(&p.port, |t| {
            t.attempt_id = Some(p.attempt_id.clone());
            t.stage = p.stage.clone();
            t.percent = p.percent;
            if p.device_serial.is_some() {
                t.device_serial = p.device_serial.clone();
            }
            match &p.status {
                ProgressStatus::Running => t.state = TileState::Running,
                ProgressStatus::Passed { cert_serial, resumed } => {
                    t.state = TileState::Passed;
                    t.percent = 100;
                    t.cert_serial = Some(cert_serial.clone());
                    t.resumed = *resumed;
                }
                ProgressStatus::Failed { code, reason, hint } => {
                    t.state = TileState::Failed;
                    t.code = Some(code.clone());
                    t.reason = Some(reason.clone());
                    t.hint = Some(hint.clone());
                }
            }
        });
        if let Some(t) = t {
            self.emit(BenchEvent::Tile(t));
        }
    }

    /// The tile whose device has this serial (a scanned label).
    pub fn find_serial(&self, serial: &str) -> Option<Tile> {
        lock(&self.inner.tiles).values().find(|t| t.device_serial.as_deref() == Some(serial)).cloned()
    }
}
