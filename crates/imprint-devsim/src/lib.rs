//! A simulated Imprint provisioning target (docs/protocol.md).
//!
//! Each simulated board speaks protocol version 1 on its own real
//! pseudo-terminal, paced at a real link speed (115200 8N1 by default), with
//! real keys (ECDSA P-256/P-384 via ring), a real nonce-bound PKCS#10 CSR,
//! staging + atomic commit, proof of possession and a two-phase lock. Faults
//! ([`Faults`]) make it misbehave the ways real boards and cables do.
//!
//! ```no_run
//! use imprint_devsim::{SimConfig, SimDevice};
//! let dev = SimDevice::spawn(SimConfig::new("SIM-0001"))?;
//! println!("open {}", dev.path().display());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The firmware logic is [`Device`] (one request in, one [`Reply`] out, no
//! I/O); [`SimDevice::spawn`] serves it on a pty from a thread of its own.

pub mod device;
pub mod faults;
pub mod keys;
pub mod mqtt;
pub mod nrf91;
mod sim;

use std::path::PathBuf;

pub use device::{Delivery, Device, DeviceSnapshot, Reply};
pub use faults::{FaultParseError, Faults};
pub use keys::{DeviceKey, KeyKind};
pub use nrf91::{Modem, ModemFaults, ModemSnapshot};
pub use sim::{spawn_many, SimDevice, SimHandle, SimStats};

/// How to simulate one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Device serial (IDENT `serial`, CSR subject).
    pub serial: String,
    /// Link speed in baud (8N1: baud/10 bytes per second each way); 0 = unpaced.
    pub baud: u32,
    /// Simulated time a new key takes (KEYGEN).
    pub keygen_ms: u64,
    /// Simulated time a CSR takes.
    pub csr_ms: u64,
    /// Simulated flash write time (COMMIT, LOCK commit, RESET).
    pub flash_ms: u64,
    /// Simulated signing time (PROVE).
    pub prove_ms: u64,
    pub faults: Faults,
    /// Keep a symlink `link_dir/<serial>` to the current pty (like
    /// /dev/serial/by-id): removed on unplug, re-created on replug.
    pub link_dir: Option<PathBuf>,
    /// IDENT `model` text (default [`device::MODEL`]): any text, as a board might report.
    pub model: Option<String>,
    /// IDENT `fw` text (default [`device::FW_VERSION`]).
    pub fw_version: Option<String>,
    /// Speak the nRF91 AT dialect instead of the Imprint protocol, with
    /// these faults ([`nrf91`]); `keygen_ms` is its KEYGEN time.
    pub modem: Option<ModemFaults>,
}

impl SimConfig {
    /// A well-behaved device at 115200 baud with no simulated compute time.
    pub fn new(serial: impl Into<String>) -> Self {
        SimConfig {
            serial: serial.into(),
            baud: 115_200,
            keygen_ms: 0,
            csr_ms: 0,
            flash_ms: 0,
            prove_ms: 0,
            faults: Faults::default(),
            link_dir: None,
            model: None,
            fw_version: None,
            modem: None,
        }
    }

    /// A simulated nRF91 modem (AT commands) with `faults` (a spec such as
    /// `"urc-noise,cme-at=6:518"`; see [`nrf91`]).
    pub fn nrf91(serial: impl Into<String>, faults: &str) -> Result<Self, String> {
        let mut cfg = SimConfig::new(serial);
        cfg.modem = Some(ModemFaults::parse(faults)?);
        Ok(cfg)
    }

    /// The same reporting this model and firmware version text in IDENT.
    pub fn with_identity(mut self, model: impl Into<String>, fw_version: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self.fw_version = Some(fw_version.into());
        self
    }

    /// The same with `faults` (a spec such as `"bad-crc-at=3,noise"`) added.
    pub fn with_faults(mut self, spec: &str) -> Result<Self, FaultParseError> {
        self.faults.apply(spec)?;
        Ok(self)
    }

    pub fn with_baud(mut self, baud: u32) -> Self {
        self.baud = baud;
        self
    }

    pub fn with_link_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.link_dir = Some(dir.into());
        self
    }

    /// Realistic compute times of a small MCU with a secure element:
    /// keygen 800 ms, CSR 300 ms, flash 150 ms, proof 120 ms.
    pub fn with_mcu_timing(mut self) -> Self {
        self.keygen_ms = 800;
        self.csr_ms = 300;
        self.flash_ms = 150;
        self.prove_ms = 120;
        self
    }

    /// Link speed in bytes per second (baud/10 for 8N1); `None` if unpaced.
    pub fn bytes_per_sec(&self) -> Option<u32> {
        (self.baud > 0).then_some(self.baud / 10)
    }
}

/// `--fault SPEC` applies to every simulated device, `--fault N:SPEC` to device N (1-based).
pub fn fault_plan(args: &[String], count: usize) -> Result<Vec<Faults>, String> {
    let mut v = vec![Faults::none(); count];
    for a in args {
        let (which, spec) = match a.split_once(':') {
            Some((n, spec)) if n.chars().all(|c| c.is_ascii_digit()) => {
                let n: usize = n.parse().map_err(|_| format!("bad device index in --fault {a}"))?;
                if n == 0 || n > count {
                    return Err(format!("--fault {a}: device {n} does not exist (1..{count})"));
                }
                (Some(n - 1), spec)
            }
            _ => (None, a.as_str()),
        };
        for (i, f) in v.iter_mut().enumerate() {
            if which.is_none_or(|w| w == i) {
                f.apply(spec).map_err(|e| format!("--fault {a}: {e}"))?;
            }
        }
    }
    Ok(v)
}
