//! Serial transport for the station: a byte stream with deadlines over the
//! `serialport` crate, port discovery with USB identity, and a hot-plug
//! watcher.
//!
//! Rules learned the hard way (see ../shared/design/field-notes.md):
//! - every read has a deadline; serialport's default timeout is 0 ms;
//! - `Ok(0)`, EOF, EIO, ENXIO and broken pipe all mean "the device is gone";
//! - ports are opened exclusively, so two stations never fight over a device;
//! - devices are identified by USB VID/PID/serial and a stable path
//!   (`/dev/serial/by-id/...` or a glob the operator configures), never by
//!   `/dev/ttyUSBn`, which changes on every re-plug.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod memory;
pub use memory::{LinkEvent, MemoryTransport, Peer};

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The device went away (unplugged, EOF, EIO).
    #[error("device disconnected: {0}")]
    Gone(String),
    /// The port exists but another program holds it.
    #[error("port {0} is in use by another program")]
    Busy(String),
    /// The port does not exist.
    #[error("port {0} does not exist")]
    NotFound(String),
    #[error("serial I/O error: {0}")]
    Io(String),
}

/// A byte stream to one device, with deadlines.
pub trait Transport: Send {
    /// Write all bytes (the OS paces them at the line rate).
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), TransportError>;
    /// Read what is available, waiting at most until `deadline`.
    /// `Ok(0)` means the deadline passed with no data.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, TransportError>;
    /// A name for logs and records.
    fn name(&self) -> &str;
    /// Leave the link idle for `d` (the device asked to be waited out, e.g.
    /// a BUSY answer). Real links sleep; a simulated link advances its own
    /// clock, so tests and fuzzing never really wait.
    fn pause(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A real (or pseudo-terminal) serial port.
pub struct SerialTransport {
    port: serialport::TTYPort,
    name: String,
}

impl SerialTransport {
    /// Open `path` exclusively at `baud` 8N1, no flow control.
    ///
    /// Exclusive means an exclusive `flock` on the port's descriptor, which
    /// the kernel drops with the descriptor however the process ends, and on
    /// a real tty also `TIOCEXCL`, which keeps out programs that do not
    /// flock. A pseudo-terminal (a simulated device) gets no `TIOCEXCL`: the
    /// flag lives on the tty, which outlives our descriptor while the other
    /// side holds the pty, so a station killed with SIGKILL (no `TIOCNXCL` on
    /// the way out) would leave every port refusing non-root openers with
    /// EBUSY until the simulator restarts (root's CAP_SYS_ADMIN ignores the
    /// flag). A real tty is freed at its last close, flag and all.
    pub fn open(path: &str, baud: u32) -> Result<Self, TransportError> {
        if !Path::new(path).exists() {
            return Err(TransportError::NotFound(path.to_string()));
        }
        let pty = is_pty(Path::new(path));
        let port = serialport::new(path, baud)
            .exclusive(!pty)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(50))
            .open_native()
            .map_err(|e| match e.kind() {
                // serialport reports a held lock (flock EWOULDBLOCK, EBUSY) as NoDevice.
                serialport::ErrorKind::NoDevice
                    if e.description.contains("lock") || e.description.to_ascii_lowercase().contains("busy") =>
                {
                    TransportError::Busy(path.to_string())
                }
                serialport::ErrorKind::NoDevice => TransportError::NotFound(path.to_string()),
                serialport::ErrorKind::Io(std::io::ErrorKind::ResourceBusy) => TransportError::Busy(path.to_string()),
                _ if e.description.contains("busy")
                    || e.description.contains("EBUSY")
                    || e.description.contains("temporarily unavailable") =>
                {
                    TransportError::Busy(path.to_string())
                }
                _ => TransportError::Io(format!("{path}: {e}")),
            })?;
        if pty {
            // serialport took a shared flock; make it exclusive on the same descriptor.
            use std::os::fd::AsRawFd;
            #[allow(deprecated)] // nix's Flock wants to own the descriptor; serialport owns it
            nix::fcntl::flock(port.as_raw_fd(), nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|e| match e {
                nix::errno::Errno::EWOULDBLOCK => TransportError::Busy(path.to_string()),
                e => TransportError::Io(format!("{path}: lock: {e}")),
            })?;
        }
        // Drop whatever a previous session left in the input buffer (late
        // answers, boot noise) so it is never mistaken for this session's.
        let _ = serialport::SerialPort::clear(&port, serialport::ClearBuffer::Input);
        Ok(SerialTransport { port, name: path.to_string() })
    }
}

/// Is `path` the slave side of a pseudo-terminal (UNIX98 pty majors 136-143)?
fn is_pty(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device() && (136..=143).contains(&nix::sys::stat::major(m.rdev())))
}

fn gone_or_io(e: &std::io::Error) -> TransportError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::BrokenPipe | K::UnexpectedEof | K::ConnectionReset | K::NotConnected => TransportError::Gone(e.to_string()),
        _ => match e.raw_os_error() {
            // EIO, ENXIO, ENODEV: the tty's other end or the USB device is gone.
            Some(5) | Some(6) | Some(19) => TransportError::Gone(e.to_string()),
            _ => TransportError::Io(e.to_string()),
        },
    }
}

impl Transport for SerialTransport {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.port.write_all(bytes).map_err(|e| gone_or_io(&e))?;
        self.port.flush().map_err(|e| gone_or_io(&e))
    }

    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, TransportError> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(0);
            }
            let left = (deadline - now).max(Duration::from_millis(1));
            // Short slices so a read that hangs past its timeout (serialport-rs #7) cannot stall us long.
            let slice = left.min(Duration::from_millis(100));
            serialport::SerialPort::set_timeout(&mut self.port, slice).map_err(|e| TransportError::Io(e.to_string()))?;
            match self.port.read(buf) {
                Ok(0) => return Err(TransportError::Gone("end of file".into())),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(gone_or_io(&e)),
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// What kind of port, and its USB identity when it has one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PortInfo {
    /// The path the station opens (a stable link where one exists).
    pub path: String,
    /// What the path resolves to (e.g. /dev/ttyUSB0 or /dev/pts/7).
    pub device: String,
    pub kind: String,
    pub vid: Option<u16>,
    pub pid: Option<u16>,
    pub usb_serial: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// Physical USB location (`bus-port.port...`): maps a port to a fixture
    /// slot, stable across re-plugs of different devices into the same slot.
    pub location: Option<String>,
}

impl PortInfo {
    /// A port with no USB identity (yet).
    fn bare(path: &str, device: &str, kind: &str) -> Self {
        PortInfo {
            path: path.to_string(),
            device: device.to_string(),
            kind: kind.to_string(),
            vid: None,
            pid: None,
            usb_serial: None,
            manufacturer: None,
            product: None,
            location: None,
        }
    }
}

/// List serial ports: the OS's (USB, PCI, ...) plus every path matching the
/// operator's globs (e.g. `/dev/serial/by-id/*`, or a simulator's link dir).
pub fn list_ports(globs: &[String], include_system: bool) -> Vec<PortInfo> {
    let mut out: BTreeMap<String, PortInfo> = BTreeMap::new();
    if include_system {
        if let Ok(ports) = serialport::available_ports() {
            for p in ports {
                let mut info = PortInfo::bare(&p.port_name, &p.port_name, "unknown");
                match p.port_type {
                    serialport::SerialPortType::UsbPort(u) => {
                        info.kind = "usb".into();
                        info.vid = Some(u.vid);
                        info.pid = Some(u.pid);
                        info.usb_serial = u.serial_number;
                        info.manufacturer = u.manufacturer;
                        info.product = u.product;
                        info.location = u.location.map(|l| l.to_string());
                    }
                    serialport::SerialPortType::PciPort => info.kind = "pci".into(),
                    serialport::SerialPortType::BluetoothPort => info.kind = "bluetooth".into(),
                    serialport::SerialPortType::Unknown => {}
                }
                out.insert(info.path.clone(), info);
            }
        }
    }
    for g in globs {
        // Like a shell: `*` does not match hidden files, so a udev rule's or
        // the simulator's temporary `.name.tmp` link is never taken for a port.
        let opts = glob::MatchOptions { require_literal_leading_dot: true, ..Default::default() };
        let Ok(paths) = glob::glob_with(g, opts) else { continue };
        for p in paths.flatten() {
            let device = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if !device.exists() {
                continue; // dangling link: the device is gone
            }
            let path = p.to_string_lossy().into_owned();
            // A by-id style link names the same device as a system port: keep the link.
            let dev = device.to_string_lossy().into_owned();
            let kind = if dev.starts_with("/dev/pts/") { "pty" } else { "unknown" };
            let mut info = out.remove(&dev).unwrap_or_else(|| PortInfo::bare(&path, &dev, kind));
            info.path = path.clone();
            info.device = dev;
            out.insert(path, info);
        }
    }
    out.into_values().collect()
}

/// A port arriving or leaving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortEvent {
    Arrived(PortInfo),
    Departed(String),
}

/// Polls the port list and reports differences. serialport has no hot-plug
/// API; polling every 0.5 s is what every tool in the field does.
pub struct PortWatcher {
    globs: Vec<String>,
    include_system: bool,
    known: BTreeMap<String, PathBuf>,
}

impl PortWatcher {
    pub fn new(globs: Vec<String>, include_system: bool) -> Self {
        PortWatcher { globs, include_system, known: BTreeMap::new() }
    }

    /// Forget `path`: if it is there at the next poll, it is reported as
    /// arrived again (used after a session saw the device vanish, in case
    /// the departure was too short for a poll to see).
    pub fn forget(&mut self, path: &str) {
        self.known.remove(path);
    }

    /// Ports that appeared or disappeared since the last poll (all current
    /// ports arrive on the first poll). A port whose link now points at a
    /// different device departs and arrives again (a re-plug).
    pub fn poll(&mut self) -> Vec<PortEvent> {
        let now = list_ports(&self.globs, self.include_system);
        let mut events = Vec::new();
        let mut seen = BTreeMap::new();
        for p in now {
            let dev = PathBuf::from(&p.device);
            match self.known.get(&p.path) {
                Some(old) if *old == dev => {}
                Some(_) => {
                    events.push(PortEvent::Departed(p.path.clone()));
                    events.push(PortEvent::Arrived(p.clone()));
                }
                None => events.push(PortEvent::Arrived(p.clone())),
            }
            seen.insert(p.path.clone(), dev);
        }
        for path in self.known.keys() {
            if !seen.contains_key(path) {
                events.push(PortEvent::Departed(path.clone()));
            }
        }
        self.known = seen;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_opened_exclusively() {
        // A real pty pair: the first open wins, the second is told the port is busy.
        let (_master, slave) = serialport::TTYPort::pair().unwrap();
        let path = serialport::SerialPort::name(&slave).unwrap();
        drop(slave);
        let _first = SerialTransport::open(&path, 115_200).unwrap();
        let second = SerialTransport::open(&path, 115_200).err();
        assert!(matches!(second, Some(TransportError::Busy(_))), "{second:?}");
    }

    #[test]
    fn hidden_temporary_links_are_not_ports() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("dev");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join(".SIM-0001.tmp")).unwrap();
        std::os::unix::fs::symlink(&target, tmp.path().join("SIM-0001")).unwrap();
        let ports = list_ports(&[format!("{}/SIM*", tmp.path().display()), format!("{}/*", tmp.path().display())], false);
        assert!(ports.iter().all(|p| !p.path.contains(".SIM-0001.tmp")), "{ports:?}");
        assert!(ports.iter().any(|p| p.path.ends_with("/SIM-0001")));
    }

    #[test]
    fn missing_port_is_not_found() {
        let e = SerialTransport::open("/dev/does-not-exist-imprint", 115200).err();
        assert_eq!(e, Some(TransportError::NotFound("/dev/does-not-exist-imprint".into())));
    }

    #[test]
    fn watcher_reports_links_arriving_changing_and_leaving() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        let glob = format!("{}/*", d.display());
        let mut w = PortWatcher::new(vec![glob], false);
        assert!(w.poll().is_empty());
        let a = d.join("devA");
        let t1 = d.join("target1");
        let t2 = d.join("target2");
        std::fs::write(&t1, b"").unwrap();
        std::fs::write(&t2, b"").unwrap();
        std::os::unix::fs::symlink(&t1, &a).unwrap();
        let ev = w.poll();
        // target1/target2 are plain files matching the glob too: only look at devA.
        assert!(ev.iter().any(|e| matches!(e, PortEvent::Arrived(p) if p.path.ends_with("devA"))));
        assert!(w.poll().is_empty());
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(&t2, &a).unwrap();
        let ev = w.poll();
        assert!(ev.contains(&PortEvent::Departed(a.to_string_lossy().into_owned())));
        assert!(ev.iter().any(|e| matches!(e, PortEvent::Arrived(p) if p.path.ends_with("devA"))));
        std::fs::remove_file(&a).unwrap();
        assert_eq!(w.poll(), vec![PortEvent::Departed(a.to_string_lossy().into_owned())]);
    }
}
