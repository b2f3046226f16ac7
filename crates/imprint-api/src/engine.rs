//! The one provisioning engine: a tile per port (fixture slot), kept current
//! from the port watcher and the sessions' progress, provisioning on arrival
//! (auto mode) or on the operator's command (manual mode). The app's Bench,
//! `imprint watch`, `imprint station` and `imprint provision` all run this.
//!
//! Re-arrival: a device unplugged mid-attempt and plugged back is provisioned
//! again to the end (with its existing certificate) however fast it comes
//! back: an `unplugged` ending makes the watcher forget the port, so its next
//! poll reports it as arrived even when the departure was never seen.

use imprint_proto::{DeviceState, DialectKind, FailureCode, Stage};
use imprint_serial::{PortEvent, PortWatcher};
use imprint_station::{Mode, Progress, ProgressFn, ProgressStatus, Station};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use ts_rs::TS;

/// What a tile shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum TileState {
    /// A device is attached and waiting for the operator (manual mode).
    Ready,
    /// A device that says it is already provisioned and locked (manual mode:
    /// identified, nothing written).
    Provisioned,
    Running,
    Passed,
    Failed,
    /// The port went away; the tile keeps its last result until the device returns.
    Gone,
}

/// One port / fixture slot on the bench.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "TileDto")]
pub struct Tile {
    pub port: String,
    /// 1-based fixture position, stable per port across restarts (kept in the
    /// local store).
    pub slot: u32,
    pub state: TileState,
    pub present: bool,
    pub device_serial: Option<String>,
    /// What the device said of itself on arrival, when identified.
    pub device_state: Option<DeviceState>,
    /// The stage reached; none before a run.
    pub stage: Option<Stage>,
    pub percent: u8,
    pub attempt_id: Option<String>,
    pub cert_serial: Option<String>,
    /// The certificate was issued earlier and re-sent (resumed after an unplug or a crash).
    pub resumed: bool,
    /// The device was already provisioned and locked with this certificate:
    /// a re-check, nothing was written.
    pub recheck: bool,
    /// This device's previous attempt on this port was cut by an unplug; the
    /// current one resumes it.
    pub interrupted: bool,
    pub code: Option<FailureCode>,
    pub reason: Option<String>,
    /// What to do next, in full.
    pub hint: Option<String>,
    /// Retrying the same device can succeed (Retry is offered only then).
    pub retryable: bool,
    /// The device's newest certificate in the store is revoked: shown at
    /// once (on arrival, after an attempt, and as soon as a supervisor
    /// revokes it while the device is attached), whatever the tile's state.
    pub revoked: bool,
    /// An open rework authorisation for this device serial (a supervisor's
    /// `REWORK:` scan or `imprint rework authorise`): until when it is
    /// valid. The next attempt on this serial resets the board and
    /// re-provisions it; a board refused as `duplicate_serial` may be retried.
    pub rework_until: Option<String>,
    /// The dialect this port speaks (`[[dialects]]` rules; docs/drivers.md).
    pub dialect: DialectKind,
    /// When this tile last changed: the process's bench revision, stamped
    /// under the tiles' lock. Events and snapshots reach the UI by different
    /// paths and may arrive out of order; the UI keeps the newest revision
    /// (a snapshot taken before an event must not undo it).
    #[ts(type = "number")]
    pub rev: u64,
}

/// The bench revision: one counter for the process, so a bench that replaces
/// another (Settings saved) goes on numbering above the tiles it carried.
static REV: AtomicU64 = AtomicU64::new(0);

/// The next revision; called with the tiles' lock held, so revisions follow
/// the order in which the changes were made.
fn next_rev() -> u64 {
    REV.fetch_add(1, Ordering::SeqCst) + 1
}

/// All tiles at one revision: every change up to `rev` is in it, none after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "BenchSnapshotDto")]
pub struct BenchSnapshot {
    #[ts(type = "number")]
    pub rev: u64,
    /// In slot order.
    pub tiles: Vec<Tile>,
}

impl Tile {
    fn new(port: &str, slot: u32) -> Tile {
        Tile {
            port: port.to_string(),
            slot,
            state: TileState::Ready,
            present: true,
            device_serial: None,
            device_state: None,
            stage: None,
            percent: 0,
            attempt_id: None,
            cert_serial: None,
            resumed: false,
            recheck: false,
            interrupted: false,
            code: None,
            reason: None,
            hint: None,
            retryable: false,
            revoked: false,
            rework_until: None,
            dialect: DialectKind::Imprint,
            rev: 0,
        }
    }

    /// The attempt on this tile is over (passed or failed).
    pub fn finished(&self) -> bool {
        matches!(self.state, TileState::Passed | TileState::Failed)
    }
}

/// Something the bench wants shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "BenchEventDto")]
// One event per tile change; the tile is sent whole (the UI replaces it).
#[allow(clippy::large_enum_variant)]
pub enum BenchEvent {
    Tile {
        tile: Tile,
    },
    /// The port's tile left the bench at revision `rev`.
    Removed {
        port: String,
        #[ts(type = "number")]
        rev: u64,
    },
}

pub type BenchEventFn = Arc<dyn Fn(&BenchEvent) + Send + Sync>;

/// Where the engine finds ports.
#[derive(Clone, Debug, Default)]
pub struct PortSource {
    /// Globs watched for arrivals (`/dev/serial/by-id/*`, the simulator's link dir).
    pub globs: Vec<String>,
    /// Also the OS's own serial ports.
    pub system_ports: bool,
    /// Fixed ports, provisioned once each (`imprint provision --port`): not watched.
    pub fixed: Vec<String>,
}

/// An automatic re-arm after an `unplugged` ending is allowed this many
/// times in a row without a real departure (a port that keeps failing with
/// I/O errors is left to the operator).
const MAX_AUTO_RESUMES: u32 = 3;

/// Tiles of ports that are gone (their last result shown until the device
/// comes back) kept on the bench; past this many the longest gone is removed
/// ([`BenchEvent::Removed`]) and its last result kept only in the tally. A
/// fixture has far fewer slots; ports named per device (`/dev/serial/by-id`)
/// would otherwise grow the bench by a tile per device for the whole shift
/// (issue 17's soak: +1.9 MiB per 1,000 devices).
pub const MAX_ABSENT_TILES: usize = 64;

/// How an attempt ended, as the run's summary counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Passed,
    /// Stopped by the station's shutdown: it resumes on the next run.
    Stopped,
    Failed {
        /// The store could not record it (disk full or failing).
        store: bool,
    },
}

impl Ending {
    fn of(t: &Tile) -> Ending {
        match (t.state, t.code) {
            (TileState::Passed, _) => Ending::Passed,
            (_, Some(FailureCode::StationStopping)) => Ending::Stopped,
            (_, code) => Ending::Failed { store: matches!(code, Some(FailureCode::StoreError | FailureCode::StoreFull)) },
        }
    }
}

/// Devices by how their last attempt ended, one count per port: one cut by an
/// unplug and then resumed to the end has passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    /// Stopped by the shutdown (they resume on the next run).
    pub stopped: usize,
    /// Of the failed, those the store could not record.
    pub store_failed: usize,
}

impl Tally {
    fn add(&mut self, e: Ending) {
        match e {
            Ending::Passed => self.passed += 1,
            Ending::Stopped => self.stopped += 1,
            Ending::Failed { store } => {
                self.failed += 1;
                self.store_failed += usize::from(store);
            }
        }
    }

    /// Take back an ending counted earlier (its port came back and ended again).
    fn take_back(&mut self, e: Ending) {
        match e {
            Ending::Passed => self.passed = self.passed.saturating_sub(1),
            Ending::Stopped => self.stopped = self.stopped.saturating_sub(1),
            Ending::Failed { store } => {
                self.failed = self.failed.saturating_sub(1);
                self.store_failed = self.store_failed.saturating_sub(usize::from(store));
            }
        }
    }
}

/// The endings of this many of the most recently removed ports are kept by
/// port, so a device that comes back on its port after its tile was removed
/// is counted once, by its new ending (a bound: about 100 bytes each). Past
/// it, a port removed earlier that comes back counts twice.
pub const MAX_REMEMBERED_REMOVED: usize = 4096;

/// What the engine keeps of finished attempts: bounded by the ports on the
/// bench, whatever the number of devices (no list of every attempt).
#[derive(Default)]
struct Finished {
    /// Attempts finished since start.
    count: usize,
    /// Port → the ending of its last finished attempt, for ports on the bench.
    last: BTreeMap<String, Ending>,
    /// The last endings of ports removed from the bench.
    removed: Tally,
    /// The most recently removed ports' endings (counted in `removed`), oldest
    /// first, at most [`MAX_REMEMBERED_REMOVED`].
    removed_last: hashlink::LinkedHashMap<String, Ending>,
}

impl Finished {
    /// `port`'s attempt ended: it counts by this ending, once, even if its
    /// tile was removed after an earlier ending.
    fn ended(&mut self, port: &str, e: Ending) {
        self.count += 1;
        if let Some(old) = self.removed_last.remove(port) {
            self.removed.take_back(old);
        }
        self.last.insert(port.to_string(), e);
    }

    fn tally(&self) -> Tally {
        let mut t = self.removed;
        for e in self.last.values() {
            t.add(*e);
        }
        t
    }

    /// `port`'s tile left the bench: its last ending moves to `removed`.
    fn removed(&mut self, port: &str) {
        if let Some(e) = self.last.remove(port) {
            self.removed.add(e);
            self.removed_last.insert(port.to_string(), e);
            while self.removed_last.len() > MAX_REMEMBERED_REMOVED {
                self.removed_last.pop_front();
            }
        }
    }
}

struct Inner {
    station: Station,
    mode: Mutex<Mode>,
    tiles: Mutex<BTreeMap<String, Tile>>,
    /// Ports whose tiles came from a bench this one replaced (Settings
    /// saved): on their first arrival a finished result is kept, not re-run.
    carried: Mutex<std::collections::BTreeSet<String>>,
    /// port → consecutive automatic resumes.
    resumes: Mutex<BTreeMap<String, u32>>,
    /// Ports the watcher must forget (re-report as arrived).
    forget: Mutex<Vec<String>>,
    events: BenchEventFn,
    stop: AtomicBool,
    /// Finished attempts (a count and each port's last ending), and a condition to wait on.
    finished: Mutex<Finished>,
    finished_cv: Condvar,
    /// Port → when (a sequence number) its tile stopped being present; the
    /// oldest go first once there are more than [`MAX_ABSENT_TILES`].
    absent: Mutex<BTreeMap<String, u64>>,
    absent_seq: std::sync::atomic::AtomicU64,
    /// Port threads (attempts and identification), joined on stop.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Handle to a running engine.
#[derive(Clone)]
pub struct Bench {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the engine did not start an attempt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BenchError {
    #[error("no device on port {0}")]
    NoSuchPort(String),
    #[error("port {0} is already being provisioned")]
    Busy(String),
    #[error("the station is stopping: no new devices are started")]
    Stopping,
}

impl From<BenchError> for crate::ApiError {
    fn from(e: BenchError) -> Self {
        let code = match e {
            BenchError::NoSuchPort(_) => crate::ErrorCode::NotFound,
            BenchError::Busy(_) => crate::ErrorCode::Busy,
            BenchError::Stopping => crate::ErrorCode::NotReady,
        };
        crate::ApiError::new(code, e.to_string())
    }
}

impl Bench {
    /// Start the engine on `ports` in `mode`; `previous` tiles (from a bench
    /// being replaced, e.g. after Settings were saved) keep their results.
    pub fn start(station: Station, ports: PortSource, mode: Mode, events: BenchEventFn, previous: Vec<Tile>) -> Bench {
        let carried = previous.iter().map(|t| t.port.clone()).collect();
        // The replaced bench's tiles are not present until their devices are seen again.
        let absent: BTreeMap<String, u64> = previous.iter().zip(0u64..).map(|(t, i)| (t.port.clone(), i)).collect();
        let absent_seq = absent.len() as u64;
        let tiles: BTreeMap<String, Tile> = previous
            .into_iter()
            .map(|mut t| {
                if t.state == TileState::Running {
                    // The old station's attempt is over; its record says how.
                    t.state = TileState::Gone;
                }
                t.present = false;
                t.rev = next_rev();
                (t.port.clone(), t)
            })
            .collect();
        let bench = Bench {
            inner: Arc::new(Inner {
                station,
                mode: Mutex::new(mode),
                tiles: Mutex::new(tiles),
                carried: Mutex::new(carried),
                resumes: Mutex::new(BTreeMap::new()),
                forget: Mutex::new(Vec::new()),
                events,
                stop: AtomicBool::new(false),
                finished: Mutex::new(Finished::default()),
                finished_cv: Condvar::new(),
                absent: Mutex::new(absent),
                absent_seq: std::sync::atomic::AtomicU64::new(absent_seq),
                threads: Mutex::new(Vec::new()),
                watcher: Mutex::new(None),
            }),
        };
        for p in &ports.fixed {
            bench.arrived(p);
        }
        if !ports.globs.is_empty() || ports.system_ports {
            let b = bench.clone();
            let spawned = std::thread::Builder::new().name("imprint-port-watch".into()).spawn(move || {
                let mut watcher = PortWatcher::new(ports.globs, ports.system_ports);
                while !b.inner.stop.load(Ordering::Relaxed) {
                    for p in std::mem::take(&mut *lock(&b.inner.forget)) {
                        watcher.forget(&p);
                    }
                    for ev in watcher.poll() {
                        match ev {
                            PortEvent::Arrived(p) => b.arrived(&p.path),
                            PortEvent::Departed(path) => b.departed(&path),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
            match spawned {
                Ok(h) => *lock(&bench.inner.watcher) = Some(h),
                Err(e) => {
                    tracing::error!(error = %e, "could not start the port watcher: no device will be seen arriving")
                }
            }
        }
        bench
    }

    pub fn station(&self) -> &Station {
        &self.inner.station
    }

    /// Stop taking new devices and wait for the attempts in flight to end.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(h) = lock(&self.inner.watcher).take() {
            let _ = h.join();
        }
        loop {
            let threads = std::mem::take(&mut *lock(&self.inner.threads));
            if threads.is_empty() {
                break;
            }
            for h in threads {
                if h.join().is_err() {
                    tracing::error!("a port thread panicked");
                }
            }
        }
    }

    pub fn stopping(&self) -> bool {
        self.inner.stop.load(Ordering::Relaxed)
    }

    pub fn mode(&self) -> Mode {
        *lock(&self.inner.mode)
    }

    /// Switch mode. Switching to auto does not start the devices waiting:
    /// the caller asks the operator, then calls [`Bench::provision_all_ready`].
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.inner.mode) = mode;
    }

    /// How many attached devices wait for the operator.
    pub fn waiting(&self) -> usize {
        lock(&self.inner.tiles).values().filter(|t| t.present && t.state == TileState::Ready).count()
    }

    /// All tiles, in slot order.
    pub fn tiles(&self) -> Vec<Tile> {
        self.snapshot().tiles
    }

    /// All tiles, in slot order, with the revision they were read at.
    pub fn snapshot(&self) -> BenchSnapshot {
        let tiles = lock(&self.inner.tiles);
        let rev = REV.load(Ordering::SeqCst);
        let mut v: Vec<Tile> = tiles.values().cloned().collect();
        drop(tiles);
        v.sort_by_key(|t| t.slot);
        BenchSnapshot { rev, tiles: v }
    }

    /// How many attempts have finished since the engine started.
    pub fn finished_count(&self) -> usize {
        lock(&self.inner.finished).count
    }

    /// Devices by how their last attempt ended (one per port, including
    /// ports since removed from the bench).
    pub fn tally(&self) -> Tally {
        lock(&self.inner.finished).tally()
    }

    /// Wait until `n` attempts have finished, or `timeout` passes; returns how many have.
    pub fn wait_finished(&self, n: usize, timeout: Duration) -> usize {
        let g = lock(&self.inner.finished);
        let (g, _) = self.inner.finished_cv.wait_timeout_while(g, timeout, |f| f.count < n).unwrap_or_else(|p| p.into_inner());
        g.count
    }

    /// True when no attempt is running.
    pub fn idle(&self) -> bool {
        !lock(&self.inner.tiles).values().any(|t| t.state == TileState::Running)
    }

    fn emit(&self, tile: Tile) {
        // Every tile change passes here: the ports-attached gauge follows it.
        let attached = lock(&self.inner.tiles).values().filter(|t| t.present).count();
        self.inner.station.metrics().set_ports_attached(attached);
        (self.inner.events)(&BenchEvent::Tile { tile });
    }

    fn update(&self, port: &str, f: impl FnOnce(&mut Tile)) -> Option<Tile> {
        let mut tiles = lock(&self.inner.tiles);
        let t = tiles.get_mut(port)?;
        f(t);
        t.rev = next_rev();
        Some(t.clone())
    }

    fn spawn(&self, name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let h = std::thread::Builder::new().name(name).spawn(f)?;
        let mut threads = lock(&self.inner.threads);
        threads.retain(|h| !h.is_finished());
        threads.push(h);
        Ok(())
    }

    fn slot_for(&self, port: &str, tiles: &BTreeMap<String, Tile>) -> u32 {
        if let Some(t) = tiles.get(port) {
            return t.slot;
        }
        crate::slots::slot_for(self.inner.station.store(), port, tiles.values().map(|t| t.slot))
    }

    fn arrived(&self, port: &str) {
        if self.stopping() {
            return;
        }
        let (tile, start) = {
            let mut tiles = lock(&self.inner.tiles);
            let slot = self.slot_for(port, &tiles);
            let t = tiles.entry(port.to_string()).or_insert_with(|| Tile::new(port, slot));
            t.present = true;
            t.rev = next_rev();
            lock(&self.inner.absent).remove(port);
            t.dialect = self.inner.station.ctx().cfg.dialect_for(port).0;
            let carried = lock(&self.inner.carried).remove(port);
            // A device whose attempt the reopen stopped resumes; other results stay.
            let stopped_by_reopen = t.code == Some(FailureCode::StationStopping);
            if carried && !stopped_by_reopen && (t.finished() || t.state == TileState::Provisioned) {
                // The same device, still attached, after the station was
                // reopened (Settings saved): keep its result on the tile.
                (t.clone(), false)
            } else if t.state == TileState::Running {
                // The attempt still holds the port; it ends on its own.
                (t.clone(), false)
            } else {
                let was_cut = t.code == Some(FailureCode::Unplugged) && t.state == TileState::Failed;
                let was_gone = t.state == TileState::Gone;
                // A device that was cut off mid-attempt comes back: say so.
                t.interrupted = was_cut || (was_gone && t.attempt_id.is_some() && !t.finished());
                t.state = TileState::Ready;
                t.stage = None;
                t.percent = 0;
                t.device_state = None;
                if !t.interrupted {
                    t.revoked = false;
                    t.rework_until = None;
                    t.device_serial = None;
                    t.code = None;
                    t.reason = None;
                    t.hint = None;
                    t.retryable = false;
                    t.cert_serial = None;
                }
                (t.clone(), true)
            }
        };
        self.emit(tile);
        if !start {
            return;
        }
        // Auto mode starts a device by itself only while an operator is
        // signed in (the attempt is recorded under them); otherwise the
        // device waits, identified, for the next operator.
        if self.mode() == Mode::Auto && self.inner.station.ctx().operator().is_some() {
            if let Err(e) = self.provision(port) {
                tracing::warn!(port, error = %e, "could not start a device on arrival");
            }
        } else {
            self.identify(port);
        }
    }

    /// Manual mode: say who is there (HELLO + IDENT, nothing written) so a
    /// scanned label can be matched before provisioning, and a locked device
    /// shows as provisioned.
    fn identify(&self, port: &str) {
        let b = self.clone();
        let p = port.to_string();
        let baud = self.inner.station.ctx().cfg.baud;
        let dialect = self.inner.station.ctx().cfg.dialect_for(port).0;
        let r = self.spawn(format!("identify {port}"), move || {
            let id = imprint_station::driver::identify_as(&p, baud, dialect);
            let revoked = id.as_ref().is_ok_and(|id| b.is_revoked(&id.serial));
            let rework = id.as_ref().ok().and_then(|id| b.open_rework(&id.serial));
            let t = b.update(&p, |t| {
                if t.state != TileState::Ready {
                    return;
                }
                match &id {
                    Ok(id) => {
                        t.device_serial = Some(id.serial.clone());
                        t.device_state = Some(id.state);
                        t.revoked = revoked;
                        t.rework_until = rework.clone();
                        if id.state == DeviceState::Locked {
                            t.state = TileState::Provisioned;
                        }
                    }
                    Err(e) => t.reason = Some(format!("not identified yet: {e}")),
                }
            });
            if let Some(t) = t {
                b.emit(t);
            }
        });
        if let Err(e) = r {
            tracing::warn!(port, error = %e, "could not start identifying a device");
        }
    }

    fn departed(&self, port: &str) {
        lock(&self.inner.resumes).remove(port);
        let t = self.update(port, |t| {
            t.present = false;
            if matches!(t.state, TileState::Ready | TileState::Provisioned | TileState::Running) {
                t.state = TileState::Gone;
            }
        });
        if let Some(t) = t {
            self.emit(t);
            self.mark_absent(port);
        }
    }

    /// Provision (or retry) the device on `port`.
    pub fn provision(&self, port: &str) -> Result<(), BenchError> {
        if self.stopping() {
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
            t.stage = Some(Stage::Hello);
            t.percent = 0;
            t.code = None;
            t.reason = None;
            t.hint = None;
            t.retryable = false;
            t.cert_serial = None;
            t.resumed = false;
            t.recheck = false;
            t.rev = next_rev();
            t.clone()
        };
        self.emit(tile);
        let b = self.clone();
        let p = port.to_string();
        let progress: ProgressFn = {
            let b = self.clone();
            Arc::new(move |pr: &Progress| b.on_progress(pr))
        };
        let spawned = self.spawn(format!("port {port}"), move || {
            let result = b.inner.station.provision(&p, Some(&progress));
            match result {
                Ok(r) => b.attempt_over(&p, &r),
                Err(e) => {
                    let t = b.update(&p, |t| {
                        t.state = TileState::Failed;
                        t.code = Some(FailureCode::StoreError);
                        t.reason = Some(format!("the attempt could not be recorded: {e}"));
                        t.hint = Some("Check the station's disk (space, permissions), then press Retry.".into());
                        t.retryable = true;
                    });
                    if let Some(t) = t {
                        b.emit(t.clone());
                        b.record_finished(t);
                    }
                }
            }
        });
        if let Err(e) = spawned {
            let t = self.update(port, |t| {
                t.state = TileState::Failed;
                t.code = Some(FailureCode::InternalError);
                t.reason = Some(format!("the station could not start a thread for this port: {e}"));
                t.hint = Some("The workstation is out of resources: close other programs, then press Retry.".into());
                t.retryable = true;
            });
            if let Some(t) = t {
                self.emit(t.clone());
                self.record_finished(t);
            }
        }
        Ok(())
    }

    fn record_finished(&self, t: Tile) {
        lock(&self.inner.finished).ended(&t.port, Ending::of(&t));
        self.inner.finished_cv.notify_all();
    }

    /// The tile of `port` is no longer present: it becomes a candidate for removal.
    fn mark_absent(&self, port: &str) {
        let seq = self.inner.absent_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.absent).insert(port.to_string(), seq);
        self.evict_absent();
    }

    /// Remove the longest-gone tiles beyond [`MAX_ABSENT_TILES`] (never one
    /// whose attempt still runs, nor one whose device came back).
    fn evict_absent(&self) {
        let mut oldest: Vec<(u64, String)> = {
            let absent = lock(&self.inner.absent);
            if absent.len() <= MAX_ABSENT_TILES {
                return;
            }
            absent.iter().map(|(p, s)| (*s, p.clone())).collect()
        };
        oldest.sort_unstable();
        let mut excess = oldest.len() - MAX_ABSENT_TILES;
        for (_, port) in oldest {
            if excess == 0 {
                break;
            }
            let removed = {
                let mut tiles = lock(&self.inner.tiles);
                match tiles.get(&port) {
                    Some(t) if t.present || t.state == TileState::Running => None,
                    _ => {
                        tiles.remove(&port);
                        Some(next_rev())
                    }
                }
            };
            let Some(rev) = removed else { continue };
            excess -= 1;
            lock(&self.inner.absent).remove(&port);
            lock(&self.inner.carried).remove(&port);
            lock(&self.inner.resumes).remove(&port);
            lock(&self.inner.finished).removed(&port);
            (self.inner.events)(&BenchEvent::Removed { port, rev });
        }
    }

    /// An attempt ended: keep its result; after an unplug, re-arm the port so
    /// the device is provisioned again as soon as it is back.
    fn attempt_over(&self, port: &str, r: &imprint_station::AttemptResult) {
        let tile = lock(&self.inner.tiles).get(port).cloned();
        let Some(tile) = tile else { return };
        let unplugged = matches!(&r.outcome, imprint_proto::session::Outcome::Failed(f) if f.code == FailureCode::Unplugged);
        self.record_finished(tile);
        if unplugged && !self.stopping() {
            let n = {
                let mut resumes = lock(&self.inner.resumes);
                let n = resumes.entry(port.to_string()).or_insert(0);
                *n += 1;
                *n
            };
            if n <= MAX_AUTO_RESUMES {
                let t = self.update(port, |t| t.present = false);
                if let Some(t) = t {
                    self.emit(t);
                    self.mark_absent(port);
                }
                lock(&self.inner.forget).push(port.to_string());
            }
        } else {
            lock(&self.inner.resumes).remove(port);
        }
    }

    /// Provision every attached device that is waiting (manual mode's "all").
    pub fn provision_all_ready(&self) -> usize {
        let ready: Vec<String> =
            lock(&self.inner.tiles).values().filter(|t| t.present && t.state == TileState::Ready).map(|t| t.port.clone()).collect();
        ready.iter().filter(|p| self.provision(p).is_ok()).count()
    }

    fn on_progress(&self, p: &Progress) {
        // The store is asked once the device is known and the attempt is over.
        let revoked = match (&p.status, &p.device_serial) {
            (ProgressStatus::Running, _) | (_, None) => None,
            (_, Some(serial)) => Some((self.is_revoked(serial), self.open_rework(serial))),
        };
        let t = self.update(&p.port, |t| {
            if let Some((r, rework)) = &revoked {
                t.revoked = *r;
                t.rework_until = rework.clone();
            }
            t.attempt_id = Some(p.attempt_id.clone());
            t.stage = Some(p.stage);
            t.percent = p.percent;
            if p.device_serial.is_some() {
                t.device_serial = p.device_serial.clone();
            }
            match &p.status {
                ProgressStatus::Running => t.state = TileState::Running,
                ProgressStatus::Passed { cert_serial, resumed, recheck } => {
                    t.state = TileState::Passed;
                    t.percent = 100;
                    t.cert_serial = Some(cert_serial.clone());
                    t.resumed = *resumed;
                    t.recheck = *recheck;
                    t.retryable = false;
                }
                ProgressStatus::Failed { code, reason, hint, retryable } => {
                    t.state = TileState::Failed;
                    t.code = Some(*code);
                    t.reason = Some(reason.clone());
                    t.hint = Some(hint.clone());
                    t.retryable = *retryable;
                }
            }
        });
        if let Some(t) = t {
            self.emit(t);
        }
    }

    /// Whether the newest certificate the store holds for this device serial is revoked.
    fn is_revoked(&self, serial: &str) -> bool {
        match self.inner.station.store().latest_cert_for_device(serial) {
            Ok(c) => c.is_some_and(|c| c.status.known() == Some(imprint_store::CertStatus::Revoked)),
            Err(e) => {
                tracing::warn!(serial, error = %e, "could not read the device's certificate status");
                false
            }
        }
    }

    /// Until when an open rework authorisation of this serial is valid.
    fn open_rework(&self, serial: &str) -> Option<String> {
        match self.inner.station.store().open_rework(serial, &imprint_store::now_text()) {
            Ok(r) => r.map(|r| r.expires_at),
            Err(e) => {
                tracing::warn!(serial, error = %e, "could not read the device's rework authorisations");
                None
            }
        }
    }

    /// A rework of `serial` was authorised: every tile of that device shows
    /// it at once, and one refused as `duplicate_serial` becomes retryable
    /// (Retry resets and re-provisions it). Returns those tiles.
    pub fn refresh_rework(&self, serial: &str) -> Vec<Tile> {
        let until = self.open_rework(serial);
        let changed: Vec<Tile> = {
            let mut tiles = lock(&self.inner.tiles);
            tiles
                .values_mut()
                .filter(|t| t.device_serial.as_deref() == Some(serial))
                .map(|t| {
                    t.rework_until = until.clone();
                    if until.is_some() && t.state == TileState::Failed && t.code == Some(FailureCode::DuplicateSerial) {
                        t.retryable = true;
                        t.hint = Some(format!(
                            "a supervisor authorised rework of {serial}: Retry resets this board, gives it a new key and certificate and revokes the old one as superseded"
                        ));
                    }
                    t.rev = next_rev();
                    t.clone()
                })
                .collect()
        };
        for t in &changed {
            self.emit(t.clone());
        }
        changed
    }

    /// Look again at every tile whose device is known (a revocation was
    /// recorded): tiles whose flag changed are updated and sent at once.
    /// Returns the tiles that now show their device revoked.
    pub fn refresh_revoked(&self) -> Vec<Tile> {
        let known: Vec<(String, String)> =
            lock(&self.inner.tiles).values().filter_map(|t| t.device_serial.clone().map(|s| (t.port.clone(), s))).collect();
        let mut flagged = Vec::new();
        for (port, serial) in known {
            let revoked = self.is_revoked(&serial);
            let changed = {
                let mut tiles = lock(&self.inner.tiles);
                match tiles.get_mut(&port) {
                    Some(t) if t.device_serial.as_deref() == Some(serial.as_str()) && t.revoked != revoked => {
                        t.revoked = revoked;
                        t.rev = next_rev();
                        Some(t.clone())
                    }
                    _ => None,
                }
            };
            if let Some(t) = changed {
                self.emit(t);
            }
            if revoked {
                if let Some(t) = lock(&self.inner.tiles).get(&port) {
                    flagged.push(t.clone());
                }
            }
        }
        flagged
    }

    /// The tile whose device has this serial (a scanned label).
    pub fn find_serial(&self, serial: &str) -> Option<Tile> {
        lock(&self.inner.tiles).values().find(|t| t.device_serial.as_deref() == Some(serial)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_failed_comes_back_after_its_tile_was_removed_and_passes_counts_once_as_passed() {
        // Session 10's note: a port evicted past MAX_ABSENT_TILES that came
        // back was counted twice (its removed ending and its new one), so
        // `imprint station` said "1 failed" and exited 1 for a device that passed.
        let mut f = Finished::default();
        f.ended("/dev/serial/by-id/a", Ending::Failed { store: false });
        f.ended("/dev/serial/by-id/b", Ending::Passed);
        f.removed("/dev/serial/by-id/a");
        assert_eq!((f.tally().passed, f.tally().failed), (1, 1));
        f.ended("/dev/serial/by-id/a", Ending::Passed);
        let t = f.tally();
        assert_eq!((t.passed, t.failed, t.store_failed), (2, 0, 0), "one count per port, by its last ending");
        assert_eq!(f.count, 3, "every attempt is still counted as finished");
        // Removed again and back again: still once.
        f.removed("/dev/serial/by-id/a");
        f.ended("/dev/serial/by-id/a", Ending::Failed { store: true });
        let t = f.tally();
        assert_eq!((t.passed, t.failed, t.store_failed), (1, 1, 1));
    }

    #[test]
    fn removed_endings_are_remembered_up_to_their_bound_and_the_oldest_count_on() {
        let mut f = Finished::default();
        let n = MAX_REMEMBERED_REMOVED + 10;
        for i in 0..n {
            let p = format!("p{i}");
            f.ended(&p, Ending::Failed { store: false });
            f.removed(&p);
        }
        assert_eq!(f.removed_last.len(), MAX_REMEMBERED_REMOVED, "bounded");
        assert_eq!(f.tally().failed, n);
        // The newest removed port comes back: taken back.
        f.ended(&format!("p{}", n - 1), Ending::Passed);
        assert_eq!((f.tally().passed, f.tally().failed), (1, n - 1));
        // The oldest was forgotten: it counts on (the documented limit).
        f.ended("p0", Ending::Passed);
        assert_eq!((f.tally().passed, f.tally().failed), (2, n - 1));
    }
}
