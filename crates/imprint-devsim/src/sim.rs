//! The I/O side: one thread per simulated device, serving a [`Device`] on a
//! real pseudo-terminal at a real link speed.

use crate::device::{Delivery, Device, DeviceSnapshot};
use crate::nrf91::{Modem, ModemSnapshot};
use crate::SimConfig;
use imprint_proto::codec::{Decoded, Decoder, Direction, MAX_LINE};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes written to the pty master in one go when pacing.
const TX_SLICE: usize = 32;
/// Longest the I/O loop sleeps, so it notices stop/unplug commands.
const TICK: Duration = Duration::from_millis(20);

/// Traffic counters of one simulated device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Valid request frames received.
    pub requests: u64,
    /// Bytes read from the host (all of them: frames, console, garbage).
    pub bytes_from_host: u64,
    /// Bytes written to the host (answers and console noise).
    pub bytes_to_host: u64,
}

/// Namespace of [`SimDevice::spawn`].
pub struct SimDevice;

impl SimDevice {
    /// Create the device, open its pty and start its I/O thread.
    pub fn spawn(cfg: SimConfig) -> io::Result<SimHandle> {
        let pty = Pty::open(None)?;
        let link = cfg.link_dir.as_ref().map(|d| d.join(&cfg.serial));
        if let Some(dir) = &cfg.link_dir {
            std::fs::create_dir_all(dir)?;
        }
        let shared = Arc::new(Shared {
            serial: cfg.serial.clone(),
            device: Mutex::new(Device::new(&cfg)),
            modem: match &cfg.modem {
                Some(f) => Some(Mutex::new(Modem::new(&cfg.serial, f.clone(), cfg.keygen_ms).map_err(io::Error::other)?)),
                None => None,
            },
            port: Mutex::new(Port { path: pty.path.clone(), plugged: true, generation: 1 }),
            port_changed: Condvar::new(),
            link,
            stop: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            from_host: AtomicU64::new(0),
            to_host: AtomicU64::new(0),
        });
        shared.update_link(Some(&pty.path))?;
        let (tx, rx) = mpsc::channel();
        let rate = if cfg.baud == 0 { None } else { Some(cfg.baud as f64 / 10.0) };
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name(format!("devsim-{}", cfg.serial)).spawn(move || {
            let mut lp = Loop::new(thread_shared, rx, rate, pty);
            lp.run();
        })?;
        Ok(SimHandle { shared, cmds: tx, thread: Some(thread) })
    }
}

/// Spawn `n` devices with serials `<prefix>-0001`, `<prefix>-0002`, ...,
/// each configured like `base` (serial aside).
pub fn spawn_many(n: usize, prefix: &str, base: &SimConfig) -> io::Result<Vec<SimHandle>> {
    (1..=n)
        .map(|i| {
            let cfg = SimConfig { serial: format!("{prefix}-{i:04}"), ..base.clone() };
            SimDevice::spawn(cfg)
        })
        .collect()
}

enum Cmd {
    Unplug(mpsc::Sender<()>),
    Replug(mpsc::Sender<io::Result<PathBuf>>),
}

/// A running simulated device. Dropping it stops the thread, closes the
/// pty and removes the link.
pub struct SimHandle {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("serial", &self.shared.serial)
            .field("path", &self.path())
            .field("plugged", &self.is_plugged())
            .finish()
    }
}

impl SimHandle {
    pub fn serial(&self) -> &str {
        &self.shared.serial
    }

    /// The current pty slave path (the last one while unplugged).
    pub fn path(&self) -> PathBuf {
        self.shared.port().path.clone()
    }

    /// `link_dir/<serial>`, a symlink to the current pty while plugged in
    /// (like /dev/serial/by-id); `None` without a link_dir.
    pub fn link_path(&self) -> Option<PathBuf> {
        self.shared.link.clone()
    }

    pub fn is_plugged(&self) -> bool {
        self.shared.port().plugged
    }

    /// Close the pty now, as if the cable were pulled: the host's reads
    /// return EOF/EIO. The device keeps its state. Returns once closed.
    pub fn unplug(&self) {
        let (tx, rx) = mpsc::channel();
        if self.cmds.send(Cmd::Unplug(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Come back on a new pty (a new path) with state intact; unplugs first
    /// if plugged in. Returns the new path.
    pub fn replug(&self) -> io::Result<PathBuf> {
        let (tx, rx) = mpsc::channel();
        self.cmds.send(Cmd::Replug(tx)).map_err(|_| io::Error::other("device thread has stopped"))?;
        rx.recv_timeout(Duration::from_secs(5)).map_err(|_| io::Error::other("device thread did not answer"))?
    }

    /// Wait until the device is plugged in (e.g. after `replug-after-ms`);
    /// returns its path, or `None` on timeout.
    pub fn wait_plugged(&self, timeout: Duration) -> Option<PathBuf> {
        let deadline = Instant::now() + timeout;
        let mut port = self.shared.port();
        loop {
            if port.plugged {
                return Some(port.path.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            port = match self.shared.port_changed.wait_timeout(port, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// How many times the device has been plugged in (1 after spawn).
    pub fn plug_count(&self) -> u64 {
        self.shared.port().generation
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            bytes_from_host: self.shared.from_host.load(Ordering::Relaxed),
            bytes_to_host: self.shared.to_host.load(Ordering::Relaxed),
        }
    }

    pub fn snapshot(&self) -> DeviceSnapshot {
        self.shared.device().snapshot()
    }

    /// The simulated nRF91 modem's state; `None` for an Imprint device.
    pub fn modem(&self) -> Option<ModemSnapshot> {
        self.shared.modem.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).snapshot())
    }

    /// Stop the device: thread ended, pty closed, link removed. Idempotent;
    /// also done on drop.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.shared.update_link(None);
        let mut port = self.shared.port();
        port.plugged = false;
        self.shared.port_changed.notify_all();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Port {
    path: PathBuf,
    plugged: bool,
    generation: u64,
}

struct Shared {
    serial: String,
    device: Mutex<Device>,
    /// An nRF91 modem on its AT interface instead of the Imprint device.
    modem: Option<Mutex<Modem>>,
    port: Mutex<Port>,
    port_changed: Condvar,
    link: Option<PathBuf>,
    stop: AtomicBool,
    requests: AtomicU64,
    from_host: AtomicU64,
    to_host: AtomicU64,
}

impl Shared {
    fn device(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn port(&self) -> MutexGuard<'_, Port> {
        self.port.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Point the link at `target`, or remove it.
    fn update_link(&self, target: Option<&Path>) -> io::Result<()> {
        let Some(link) = &self.link else { return Ok(()) };
        match target {
            Some(t) => {
                let tmp =
                    link.with_file_name(format!(".{}.tmp", link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(t, &tmp)?;
                std::fs::rename(&tmp, link)
            }
            None => match std::fs::remove_file(link) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }
}

/// A pty pair: the master we serve, and the slave we hold open so the
/// master never sees EIO/hangup while the host closes and reopens the port.
struct Pty {
    master: PtyMaster,
    _slave: File,
    path: PathBuf,
}

impl Pty {
    /// A new pty whose slave path differs from `avoid`.
    fn open(avoid: Option<&Path>) -> io::Result<Pty> {
        let mut spare = Vec::new();
        for _ in 0..8 {
            let pty = Pty::open_one()?;
            if Some(pty.path.as_path()) != avoid {
                return Ok(pty);
            }
            // The kernel reused the number: hold this one and take another.
            spare.push(pty);
        }
        Err(io::Error::other("could not get a pty with a new path"))
    }

    fn open_one() -> io::Result<Pty> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let path = PathBuf::from(ptsname_r(&master)?);
        let slave = OpenOptions::new().read(true).write(true).custom_flags(nix::libc::O_NOCTTY).open(&path)?;
        // Raw: no echo, no CR/LF translation, no signals, 8 bits.
        let mut t = tcgetattr(slave.as_fd())?;
        cfmakeraw(&mut t);
        tcsetattr(slave.as_fd(), SetArg::TCSANOW, &t)?;
        Ok(Pty { master, _slave: slave, path })
    }
}

/// A complete line from the host and when the device may act on it.
struct Inbound {
    due: Instant,
    line: Vec<u8>,
    oversized: bool,
}

struct Loop {
    shared: Arc<Shared>,
    cmds: mpsc::Receiver<Cmd>,
    /// Link speed in bytes/s; `None` = unpaced.
    rate: Option<f64>,
    pty: Option<Pty>,
    last_path: PathBuf,
    // receive side
    rx_line: Vec<u8>,
    rx_len: usize,
    rx_oversized: bool,
    rx_start: Option<Instant>,
    rx_free_at: Instant,
    inbox: VecDeque<Inbound>,
    decoder: Decoder,
    /// An AT command being received (its PEM body spans lines).
    at_command: Vec<u8>,
    // device
    pending: Option<(Instant, Vec<u8>)>,
    // transmit side
    outbox: VecDeque<u8>,
    tx_epoch: Instant,
    tx_sent: u64,
    tx_blocked: bool,
    replug_at: Option<Instant>,
}

impl Loop {
    fn new(shared: Arc<Shared>, cmds: mpsc::Receiver<Cmd>, rate: Option<f64>, pty: Pty) -> Self {
        let now = Instant::now();
        Loop {
            shared,
            cmds,
            rate,
            last_path: pty.path.clone(),
            pty: Some(pty),
            rx_line: Vec::with_capacity(MAX_LINE),
            rx_len: 0,
            rx_oversized: false,
            rx_start: None,
            rx_free_at: now,
            inbox: VecDeque::new(),
            decoder: Decoder::new(Direction::Request),
            at_command: Vec::new(),
            pending: None,
            outbox: VecDeque::new(),
            tx_epoch: now,
            tx_sent: 0,
            tx_blocked: false,
            replug_at: None,
        }
    }

    fn secs(&self, bytes: usize) -> Duration {
        match self.rate {
            Some(r) => Duration::from_secs_f64(bytes as f64 / r),
            None => Duration::ZERO,
        }
    }

    fn run(&mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if self.pty.is_none() {
                let wait = match self.replug_at {
                    Some(at) => at.saturating_duration_since(Instant::now()).min(TICK),
                    None => TICK,
                };
                match self.cmds.recv_timeout(wait) {
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if self.replug_at.is_some_and(|at| Instant::now() >= at) {
                    self.replug_at = None;
                    let _ = self.plug();
                }
                continue;
            }
            while let Ok(cmd) = self.cmds.try_recv() {
                self.command(cmd);
            }
            if self.pty.is_none() {
                continue;
            }
            self.step();
        }
        self.pty = None;
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Unplug(done) => {
                self.unplug();
                let _ = done.send(());
            }
            Cmd::Replug(done) => {
                if self.pty.is_some() {
                    self.unplug();
                }
                self.replug_at = None;
                let _ = done.send(self.plug());
            }
        }
    }

    fn unplug(&mut self) {
        if self.pty.is_none() {
            return;
        }
        {
            let mut port = self.shared.port();
            port.plugged = false;
        }
        let _ = self.shared.update_link(None);
        // Closing master and slave: the host sees EOF/EIO.
        self.pty = None;
        self.rx_line.clear();
        self.rx_len = 0;
        self.rx_oversized = false;
        self.rx_start = None;
        self.inbox.clear();
        self.decoder = Decoder::new(Direction::Request);
        self.at_command.clear();
        self.pending = None;
        self.outbox.clear();
        self.tx_blocked = false;
        self.shared.port_changed.notify_all();
    }

    fn plug(&mut self) -> io::Result<PathBuf> {
        let pty = Pty::open(Some(&self.last_path))?;
        let path = pty.path.clone();
        self.last_path = path.clone();
        let now = Instant::now();
        self.rx_free_at = now;
        self.tx_epoch = now;
        self.tx_sent = 0;
        self.pty = Some(pty);
        let _ = self.shared.update_link(Some(&path));
        {
            let mut port = self.shared.port();
            port.path = path.clone();
            port.plugged = true;
            port.generation += 1;
        }
        self.shared.port_changed.notify_all();
        Ok(path)
    }

    /// One pass: wait for I/O or the next deadline, then do what is due.
    fn step(&mut self) {
        let now = Instant::now();
        let mut wait = TICK;
        if let Some((at, _)) = &self.pending {
            wait = wait.min(at.saturating_duration_since(now));
        } else if let Some(front) = self.inbox.front() {
            wait = wait.min(front.due.saturating_duration_since(now));
        }
        if !self.outbox.is_empty() && !self.tx_blocked {
            wait = wait.min(self.next_tx_at().saturating_duration_since(now));
        }
        let ms = (wait.as_micros().div_ceil(1000)).min(u16::MAX as u128) as u16;
        let Some(pty) = &self.pty else { return };
        let mut flags = PollFlags::POLLIN;
        if self.tx_blocked {
            flags |= PollFlags::POLLOUT;
        }
        let (readable, writable, broken) = {
            let mut fds = [PollFd::new(pty.master.as_fd(), flags)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => {
                    let r = fds[0].revents().unwrap_or(PollFlags::empty());
                    (
                        r.intersects(PollFlags::POLLIN),
                        r.intersects(PollFlags::POLLOUT),
                        r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL),
                    )
                }
                Err(_) => (false, false, false),
            }
        };
        if broken && !readable {
            // Cannot happen while we hold the slave open; never spin if it does.
            std::thread::sleep(TICK);
        }
        if writable {
            self.tx_blocked = false;
            self.tx_epoch = Instant::now();
            self.tx_sent = 0;
        }
        if readable {
            self.receive();
        }
        self.process();
        self.transmit();
    }

    fn receive(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            let Some(pty) = &mut self.pty else { return };
            match pty.master.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    self.shared.from_host.fetch_add(n as u64, Ordering::Relaxed);
                    let now = Instant::now();
                    for &b in &buf[..n] {
                        self.rx_byte(b, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: all read. EIO cannot happen while we hold the
                // slave; if it does, the next poll tick tries again.
                Err(_) => return,
            }
        }
    }

    fn rx_byte(&mut self, b: u8, now: Instant) {
        let start = *self.rx_start.get_or_insert_with(|| now.max(self.rx_free_at));
        self.rx_len += 1;
        if !self.rx_oversized {
            if self.rx_line.len() < MAX_LINE {
                self.rx_line.push(b);
            } else {
                self.rx_oversized = true;
                self.rx_line.clear();
            }
        }
        if b == b'\n' {
            // Paced: the line is complete when its last byte would have
            // arrived at the link speed.
            let due = start + self.secs(self.rx_len);
            self.rx_free_at = due;
            self.inbox.push_back(Inbound { due, line: std::mem::take(&mut self.rx_line), oversized: self.rx_oversized });
            self.rx_len = 0;
            self.rx_oversized = false;
            self.rx_start = None;
        }
    }

    /// Answer what is due, release answers whose compute time is over.
    fn process(&mut self) {
        loop {
            let now = Instant::now();
            if let Some((at, _)) = &self.pending {
                if *at > now {
                    return;
                }
                if let Some((_, bytes)) = self.pending.take() {
                    self.queue_tx(bytes);
                }
                continue;
            }
            let Some(front) = self.inbox.front() else { return };
            if front.due > now {
                return;
            }
            let Some(inb) = self.inbox.pop_front() else { return };
            if inb.oversized {
                continue; // discarded, like the host's decoder does
            }
            if self.shared.modem.is_some() {
                if self.modem_line(inb.line) {
                    return;
                }
                continue;
            }
            for item in self.decoder.feed(&inb.line) {
                // Console lines and corrupt/oversized requests are ignored:
                // the host times out and retries.
                let Decoded::Frame(req) = item else { continue };
                self.shared.requests.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let (reply, replug_after) = {
                    let mut dev = self.shared.device();
                    let reply = dev.handle(&req);
                    let replug_after = dev.faults().replug_after_ms;
                    if reply.delivery == Delivery::Unplug {
                        dev.clear_unplug_fault();
                    }
                    (reply, replug_after)
                };
                if reply.delivery == Delivery::Unplug {
                    self.unplug();
                    if let Some(ms) = replug_after {
                        self.replug_at = Some(Instant::now() + Duration::from_millis(ms));
                    }
                    return;
                }
                let wire = reply.wire();
                if !wire.is_empty() {
                    // Simulated compute time counts from when the device
                    // started on the request; real time spent (a real key
                    // generation) is part of it.
                    let at = (started + Duration::from_millis(reply.busy_ms)).max(Instant::now());
                    self.pending = Some((at, wire));
                }
            }
        }
    }

    /// One received line on the AT interface: a command is complete at a
    /// CR LF outside quotes (a PEM body inside quotes spans lines). True
    /// when the modem unplugged.
    fn modem_line(&mut self, line: Vec<u8>) -> bool {
        self.at_command.extend(line);
        let quotes = self.at_command.iter().filter(|&&b| b == b'"').count();
        if !self.at_command.ends_with(b"\r\n") || quotes % 2 == 1 {
            if self.at_command.len() > 64 * 1024 {
                self.at_command.clear();
            }
            return false;
        }
        let text = String::from_utf8_lossy(&self.at_command).trim_end_matches(['\r', '\n']).to_string();
        self.at_command.clear();
        if text.trim().is_empty() {
            return false;
        }
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let reply = {
            let Some(m) = &self.shared.modem else { return false };
            let mut modem = m.lock().unwrap_or_else(|p| p.into_inner());
            let r = modem.handle(&text);
            if r.unplug {
                modem.clear_unplug_fault();
            }
            r
        };
        if reply.unplug {
            self.unplug();
            return true;
        }
        if !reply.wire.is_empty() {
            let at = (started + Duration::from_millis(reply.busy_ms)).max(Instant::now());
            self.pending = Some((at, reply.wire));
        }
        false
    }

    fn queue_tx(&mut self, bytes: Vec<u8>) {
        if self.outbox.is_empty() {
            let now = Instant::now();
            if self.next_tx_at_for(0) < now {
                // The line was idle: a new burst starts now.
                self.tx_epoch = now;
                self.tx_sent = 0;
            }
        }
        self.outbox.extend(bytes);
    }

    fn next_tx_at_for(&self, extra: usize) -> Instant {
        self.tx_epoch + self.secs(self.tx_sent as usize + extra)
    }

    /// When the next slice has fully "arrived" at the link speed.
    fn next_tx_at(&self) -> Instant {
        self.next_tx_at_for(self.outbox.len().min(TX_SLICE))
    }

    fn transmit(&mut self) {
        while !self.outbox.is_empty() && !self.tx_blocked {
            let n = if self.rate.is_some() { self.outbox.len().min(TX_SLICE) } else { self.outbox.len() };
            if self.next_tx_at_for(n) > Instant::now() {
                return;
            }
            let slice: Vec<u8> = self.outbox.iter().take(n).copied().collect();
            let Some(pty) = &mut self.pty else { return };
            match pty.master.write(&slice) {
                Ok(w) => {
                    self.outbox.drain(..w);
                    self.tx_sent += w as u64;
                    self.shared.to_host.fetch_add(w as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tx_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Should not happen while we hold the slave: drop the output.
                    self.outbox.clear();
                }
            }
        }
    }
}
